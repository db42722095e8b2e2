"""`digitflow predict --task-runner dask --dask-address tcp://...` on a real Dask cluster (a
`dask scheduler` and two `dask worker` processes, tests/servers.py) with images, output and
model on a real S3-compatible server (moto's, a separate process): the workers read the images
and write their parts on the store themselves. Every file is scored exactly once: on a local
folder, on an S3 prefix, with a worker SIGKILLed mid-run (Dask reschedules its shards), and with
the command itself SIGKILLed mid-run (--resume on the store completes it). The slow test is the
issue's must-hold: 1,000 real MNIST PNGs on S3, the accuracy of local files, and no output object
until it is complete.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import TEST_FILE
from tests.reliability.on_disk import image_files
from tests.reliability.processes import (
    DIGITFLOW,
    assert_one_line_error,
    cli_env,
    digitflow,
    kill,
    start,
    wait_until,
)
from tests.servers import DaskCluster, S3Server

SHARD = 10


def s3() -> fsspec.AbstractFileSystem:
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()  # listings are cached: these tests look at a store others change
    return fs


def upload(folder: Path, prefix: str) -> None:
    s3().put(f"{folder}/", f"{prefix}/", recursive=True)


def s3_rows(output: str) -> list[dict[str, Any]]:
    with s3().open(output, "rb") as stream:
        return pq.read_table(stream).to_pylist()


def rows_of(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def s3_part_rows(output: str) -> int:
    parts = s3().glob(f"{output.removeprefix('s3://')}.parts/part-*.parquet")
    return sum(pq.read_metadata(s3().open(part, "rb")).num_rows for part in parts)


def s3_registry(reference: dict[str, Any], bucket: str) -> str:
    """The reference run's registry, copied to the store (its checksums verify there too)."""
    registry = f"s3://{bucket}/models"
    upload(reference["registry"], registry)
    return registry


def predict(cluster: DaskCluster, source: str, model: str, output: str) -> list[str]:
    return [
        *("predict", source, "--model", model, "--output", output),
        *("--task-runner", "dask", "--dask-address", cluster.address),
        *("--shard-size", str(SHARD), "--workers", "2", "--json"),
    ]


def ran_on_workers(cluster: DaskCluster) -> int:
    """Shard tasks the cluster's workers ran (Prefect's task-run lines in their logs)."""
    logs = cluster.folder.glob("dask-worker-*.log")
    return sum(log.read_text(errors="replace").count("Task run 'score-shard-") for log in logs)


def assert_every_file_once(rows: list[dict[str, Any]], folder: Path) -> None:
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)), "a file was scored twice"
    assert set(paths) == image_files(folder)


def test_a_local_folder_on_a_dask_cluster(
    reference: dict[str, Any],
    digit_folder: Path,
    prefect_api: str,
    dask_cluster: DaskCluster,
    tmp_path: Path,
) -> None:
    """Workers on this machine reach the folder and the output's work folder themselves."""
    before = ran_on_workers(dask_cluster)
    output = tmp_path / "digits.parquet"
    args = predict(dask_cluster, str(digit_folder), str(reference["registry"]), str(output))
    done = digitflow(*args, env=cli_env(tmp_path / "data", prefect_api))
    assert done.returncode == 0, done.stderr
    assert_every_file_once(pq.read_table(output).to_pylist(), digit_folder)
    assert json.loads(done.stdout)["shards"] == ran_on_workers(dask_cluster) - before


def test_an_s3_prefix_on_a_dask_cluster(
    reference: dict[str, Any],
    digit_folder: Path,
    prefect_api: str,
    s3_server: S3Server,
    dask_cluster: DaskCluster,
    tmp_path: Path,
) -> None:
    """Images, model and output on the store; the same rows as from the local folder."""
    bucket = s3_server.new_bucket()
    upload(digit_folder, f"s3://{bucket}/in")
    output = f"s3://{bucket}/out/digits.parquet"
    args = predict(dask_cluster, f"s3://{bucket}/in", s3_registry(reference, bucket), output)
    env = cli_env(tmp_path / "data", prefect_api)
    done = digitflow(*args, env=env)
    assert done.returncode == 0, done.stderr
    rows = s3_rows(output)
    assert_every_file_once(rows, digit_folder)
    local = tmp_path / "local.parquet"
    done = digitflow(
        "predict", str(digit_folder), "--model", str(reference["registry"]), "--output",
        str(local), env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = {
        row["path"]: (row["label"], row["error"]) for row in pq.read_table(local).to_pylist()
    }
    assert {row["path"]: (row["label"], row["error"]) for row in rows} == expected
    assert s3().find(f"{bucket}/out") == [f"{bucket}/out/digits.parquet"]  # no parts, no lease


def test_a_worker_killed_mid_run(
    reference: dict[str, Any],
    digit_folder: Path,
    prefect_api: str,
    s3_server: S3Server,
    dask_cluster: DaskCluster,
    fault_rng: np.random.Generator,
    tmp_path: Path,
) -> None:
    """SIGKILL one of the two workers (and its nanny) after 2-6 shards: Dask runs its shards
    again on the other, and the run completes with every file once (should Dask give up on a
    shard instead, the run says so in one line and --resume completes it)."""
    bucket = s3_server.new_bucket()
    upload(digit_folder, f"s3://{bucket}/in")
    output = f"s3://{bucket}/out/digits.parquet"
    args = predict(dask_cluster, f"s3://{bucket}/in", s3_registry(reference, bucket), output)
    env = cli_env(tmp_path / "data", prefect_api)
    process = start([*DIGITFLOW, *args], env)
    goal = SHARD * int(fault_rng.integers(2, 7))
    wait_until(lambda: s3_part_rows(output) >= goal, process, f"{goal} rows in part files")
    victim = next(i for i, w in enumerate(dask_cluster.workers) if w.poll() is None)
    dask_cluster.kill_worker(victim)
    out, err = process.communicate(timeout=600)
    dask_cluster.add_worker()  # two again, for the tests after this one
    if process.returncode != 0:
        assert_one_line_error(subprocess.CompletedProcess(args, process.returncode, out, err))
        done = digitflow(*args, "--resume", env=env)
        assert done.returncode == 0, done.stderr
    assert_every_file_once(s3_rows(output), digit_folder)
    assert s3().find(f"{bucket}/out") == [f"{bucket}/out/digits.parquet"]
    dask_cluster.wait_for_workers(2)


def test_the_command_killed_mid_run_resumes_from_the_store(
    reference: dict[str, Any],
    digit_folder: Path,
    prefect_api: str,
    s3_server: S3Server,
    dask_cluster: DaskCluster,
    fault_rng: np.random.Generator,
    tmp_path: Path,
) -> None:
    """SIGKILL `digitflow predict` itself after 2-6 shards: no output object; the parts and
    its lease stay on the store; --resume takes the lease over (its holder's process is gone)
    and scores only what no part holds."""
    bucket = s3_server.new_bucket()
    upload(digit_folder, f"s3://{bucket}/in")
    output = f"s3://{bucket}/out/digits.parquet"
    args = predict(dask_cluster, f"s3://{bucket}/in", s3_registry(reference, bucket), output)
    env = cli_env(tmp_path / "data", prefect_api)
    process = start([*DIGITFLOW, *args], env)
    goal = SHARD * int(fault_rng.integers(2, 7))
    wait_until(lambda: s3_part_rows(output) >= goal, process, f"{goal} rows in part files")
    kill(process)
    assert not s3().exists(output)
    assert s3().glob(f"{bucket}/out/digits.parquet.lock/*.json")  # the dead run's lease

    done = digitflow(*args, "--resume", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed"] >= goal
    assert summary["images"] == len(image_files(digit_folder)) - summary["resumed"]
    assert_every_file_once(s3_rows(output), digit_folder)
    assert s3().find(f"{bucket}/out") == [f"{bucket}/out/digits.parquet"]


@pytest.mark.slow
def test_a_thousand_mnist_pngs_on_s3_with_a_two_worker_cluster(
    reference: dict[str, Any],
    mnist_dir: Path,
    prefect_api: str,
    s3_server: S3Server,
    dask_cluster: DaskCluster,
    tmp_path: Path,
) -> None:
    """The issue's must-hold: 1,000 MNIST test PNGs (the Hub's bytes) on S3, the model on S3, a
    2-worker cluster: every image exactly once, the accuracy of the same files scored from a
    local folder, and no object at the output's key until the run has ended."""
    table = pq.read_table(mnist_dir / TEST_FILE).slice(0, 1000).to_pylist()
    folder = tmp_path / "mnist"
    folder.mkdir()
    for index, row in enumerate(table):
        (folder / f"{index:04d}_{row['label']}.png").write_bytes(row["image"]["bytes"])
    bucket = s3_server.new_bucket()
    upload(folder, f"s3://{bucket}/in")
    output = f"s3://{bucket}/out/pred.parquet"
    args = predict(dask_cluster, f"s3://{bucket}/in", s3_registry(reference, bucket), output)
    args[args.index("--shard-size") + 1] = "100"
    env = cli_env(tmp_path / "data", prefect_api)
    process = start([*DIGITFLOW, *args], env)
    seen = []  # while the run runs: rows in the output object (None: no object)
    while process.poll() is None:
        exists = s3().exists(output)
        seen.append(pq.read_metadata(s3().open(output, "rb")).num_rows if exists else None)
        time.sleep(0.1)
    out, err = process.communicate()
    assert process.returncode == 0, err
    assert seen.count(None) > 10  # looked while it was still missing
    assert set(seen) <= {None, 1000}, "an output object that was not complete"

    def accuracy(rows: list[dict[str, Any]]) -> float:
        right = [row["label"] == int(row["path"].split("_")[1][0]) for row in rows]
        return sum(right) / len(right)

    rows = s3_rows(output)
    assert_every_file_once(rows, folder)
    local = tmp_path / "local.parquet"
    done = digitflow(
        "predict", str(folder), "--model", str(reference["registry"]), "--output", str(local),
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    local_rows = rows_of(local)
    assert accuracy(rows) == accuracy(local_rows) >= 0.7
    by_path = {row["path"]: row["label"] for row in local_rows}
    assert {row["path"]: row["label"] for row in rows} == by_path
    print(f"\n1,000 MNIST PNGs on S3, 2 Dask workers: accuracy {accuracy(rows):.4f}; {out}")
