"""Object storage and Dask at the edges: an S3 endpoint where nothing listens, a bucket that does
not exist, credentials the store refuses (a second moto server that checks them: moto's IAM
knows no access key, so it refuses every request, as AWS refuses wrong credentials), and a Dask
scheduler that does not answer. For the images, the output and the model alike: one line naming
the location and the problem, never a traceback, and for the scheduler within 10 s. All but the
model are checked before Prefect starts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.processes import (
    assert_one_line_error,
    cli_env,
    digitflow,
    digitflow_all,
    free_port,
)
from tests.servers import S3Server

SCHEDULER_SECONDS = 10


@pytest.fixture(scope="module")
def checking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server.start(tmp_path_factory.mktemp("s3-auth"), checking_credentials=True) as server:
        yield server


def locations(bucket: str, digit_folder: Path, registry: Path, tmp_path: Path) -> list[list[str]]:
    """The images, the output and the model each on the store, the rest local."""
    local_output = str(tmp_path / "out.parquet")
    folder, model = str(digit_folder), str(registry)
    return [
        ["predict", f"s3://{bucket}/in", "--model", model, "--output", local_output],
        ["predict", folder, "--model", model, "--output", f"s3://{bucket}/out.csv"],
        ["predict", folder, "--model", f"s3://{bucket}/models", "--output", local_output],
    ]


def test_an_endpoint_where_nothing_listens(
    reference: dict[str, Any], digit_folder: Path, prefect_api: str, tmp_path: Path
) -> None:
    """botocore and s3fs retry for about 12 s, then one line."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    credentials = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret"}
    env = cli_env(tmp_path / "data", prefect_api, AWS_ENDPOINT_URL=endpoint, **credentials)
    commands = locations("bucket", digit_folder, reference["registry"], tmp_path)
    for done in digitflow_all(commands, env, at_once=3):
        assert_one_line_error(done, "s3://bucket/", f"cannot reach the object store at {endpoint}")


def test_a_bucket_that_does_not_exist(
    reference: dict[str, Any],
    digit_folder: Path,
    prefect_api: str,
    s3_server: S3Server,
    tmp_path: Path,
) -> None:
    env = cli_env(tmp_path / "data", prefect_api)
    commands = locations("no-such-bucket", digit_folder, reference["registry"], tmp_path)
    for done in digitflow_all(commands, env, at_once=3):
        assert_one_line_error(done, "s3://no-such-bucket/", "no such bucket")


def test_credentials_the_store_refuses(
    reference: dict[str, Any],
    digit_folder: Path,
    prefect_api: str,
    checking_server: S3Server,
    tmp_path: Path,
) -> None:
    env = cli_env(tmp_path / "data", prefect_api, **checking_server.env)
    commands = locations("bucket", digit_folder, reference["registry"], tmp_path)
    for done in digitflow_all(commands, env, at_once=3):
        assert_one_line_error(done, "s3://bucket/", "access denied", "AWS_ACCESS_KEY_ID")


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:{port}", "tcp://no-such-host.invalid:8786"])
def test_a_dask_scheduler_that_does_not_answer(
    address: str,
    reference: dict[str, Any],
    digit_folder: Path,
    prefect_api: str,
    tmp_path: Path,
) -> None:
    address = address.format(port=free_port())
    started = time.monotonic()
    done = digitflow(
        *("predict", str(digit_folder), "--model", str(reference["registry"])),
        *("--output", str(tmp_path / "out.parquet"), "--task-runner", "dask"),
        *("--dask-address", address),
        env=cli_env(tmp_path / "data", prefect_api),
    )
    assert time.monotonic() - started < SCHEDULER_SECONDS
    assert_one_line_error(done, f"no Dask scheduler answers at {address}")
    assert not (tmp_path / "out.parquet").exists()
