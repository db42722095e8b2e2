"""A command killed with SIGKILL leaves no process of its own running.

`digitflow train` starts Prefect's embedded API server as a child process, and `digitflow predict`
scores in worker processes. When the command itself is SIGKILLed (by the OOM killer, say: only
the one process, not its group), nothing can clean up for it, so the children must notice that
their parent is gone and exit by themselves. Otherwise every crash leaks a server or a pool of
workers, each holding memory (and the server a port and a database) for good.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.reliability.processes import (
    DIGITFLOW,
    cli_env,
    descendants,
    kill,
    start,
    still_running,
    wait_until,
)


def test_killed_training_leaves_no_prefect_server(
    quick_training: list[str], tmp_path: Path
) -> None:
    # No PREFECT_API_URL: the command starts its embedded server first thing.
    process = start([*DIGITFLOW, *quick_training], cli_env(tmp_path / "data", None))
    wait_until(lambda: bool(descendants(process.pid)), process, "the server's process")
    children = descendants(process.pid)
    kill(process)
    assert still_running(children) == {}


def test_killed_prediction_leaves_no_workers(
    reference: dict[str, Any], digit_folder: Path, prefect_api: str, tmp_path: Path
) -> None:
    output = tmp_path / "out" / "digits.parquet"
    args = ["predict", str(digit_folder), "--model", str(reference["registry"])]
    args += ["--output", str(output), "--workers", "2", "--shard-size", "10"]
    process = start([*DIGITFLOW, *args], cli_env(tmp_path / "data", prefect_api))
    parts = output.with_name(output.name + ".parts")
    wait_until(lambda: any(parts.glob("part-*.parquet")), process, "a scored shard")
    children = descendants(process.pid)
    assert len(children) >= 2, children  # the two workers (and multiprocessing's tracker)
    kill(process)
    assert still_running(children) == {}
