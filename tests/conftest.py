"""Shared fixtures.

- `mnist_dir`: the real MNIST Parquet folder (DIGITFLOW_MNIST_SOURCE, else ../shared/data/mnist
  beside the checkout). Tests that need it skip when it is absent, but fail under CI.
- `small_mnist_dir`: a real Parquet subset (2,000 train / 500 test rows) in the same layout.
- `prefect_harness`: one Prefect test server for the whole session (starting one costs ~10 s).
- `untrained_registry`: a model registry holding v1, an untrained network (for tests where the
  labels need not be right, only identical for identical inputs); read-only.
- `s3_server`: moto's S3-compatible server for the session (a separate process on 127.0.0.1),
  its AWS_* variables set in this process too, so s3fs here and in child processes reaches it;
  `s3_server.new_bucket()` makes a fresh bucket per test.
- `dask_cluster`: a Dask scheduler and two worker processes for the module, reaching the S3
  server (tests/servers.py); their logs (`cluster.folder`) show each task run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import DaskCluster, S3Server

# Keep Prefect quiet and local before anything imports it.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TRAIN_FILE = "train-00000-of-00001.parquet"
TEST_FILE = "test-00000-of-00001.parquet"
# Where this machine (and CI) keeps real MNIST, beside the checkout.
LOCAL_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    source = os.environ.get("DIGITFLOW_MNIST_SOURCE") or str(LOCAL_MNIST)
    folder = Path(source)
    if not (folder / TRAIN_FILE).is_file():
        message = f"real MNIST Parquet files not found (DIGITFLOW_MNIST_SOURCE={source!r})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def small_mnist_dir(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 2,000 train and 500 test rows of real MNIST, written as Parquet files."""
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("small-mnist")
    for name, rows in ((TRAIN_FILE, 2000), (TEST_FILE, 500)):
        table = pq.read_table(mnist_dir / name).slice(0, rows)
        pq.write_table(table, folder / name)
    return folder


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """A throwaway Prefect API for the session; request it in any test that runs a flow."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    # Generous: on a busy 2-core machine the test server has been seen to need more than 60 s.
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def untrained_registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.builders import untrained_registry

    return untrained_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with (
        S3Server.start(tmp_path_factory.mktemp("s3")) as server,
        pytest.MonkeyPatch.context() as env,
    ):
        for name, value in server.env.items():  # for s3fs here and in child processes
            env.setenv(name, value)
        yield server


@pytest.fixture(scope="module")
def dask_cluster(
    s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaskCluster]:
    # The workers log Prefect's INFO lines (a line per task run), so a test sees where shards ran;
    # on their console too, whatever an in-process test set before (configure_prefect lowers the
    # console handler to WARNING in os.environ, which the workers would otherwise inherit).
    env = os.environ | s3_server.env
    env |= {"PREFECT_LOGGING_LEVEL": "INFO", "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO"}
    with DaskCluster.start(tmp_path_factory.mktemp("dask"), workers=2, env=env) as cluster:
        yield cluster
