"""Two `digitflow predict` runs on one output: one owns it, the other refuses in one line, and a
dead owner's lock is taken over (flows/predict/lock.py).

Issue 12: a second run deleted the first one's live work folder (the first then failed, and its
--resume refused until someone cleaned up by hand), two started at the same moment printed a
traceback in 2 of 3 trials, and a small second run silently replaced the first one's output.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tests.reliability.on_disk import image_files, part_rows
from tests.reliability.processes import (
    DIGITFLOW,
    assert_one_line_error,
    cli_env,
    digitflow,
    kill,
    start,
    wait_until,
)


def lock_holder(output: Path) -> int | None:
    try:
        return json.loads(output.with_name(output.name + ".lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def assert_complete(output: Path, folder: Path) -> None:
    paths = pq.read_table(output, columns=["path"]).column("path").to_pylist()
    assert len(paths) == len(set(paths)) and set(paths) == image_files(folder)
    assert not output.with_name(output.name + ".parts").exists()
    assert lock_holder(output) is None and not output.with_name(output.name + ".lock").exists()


def predict_args(reference: dict[str, Any], folder: Path, output: Path) -> list[str]:
    return [
        *("predict", str(folder), "--model", str(reference["registry"]), "--output", str(output)),
        *("--shard-size", "10", "--workers", "2"),
    ]


def test_a_second_run_refuses_while_the_first_runs(
    reference: dict[str, Any], digit_folder: Path, prefect_api: str, tmp_path: Path
) -> None:
    """The first is stopped (SIGSTOP) once it owns the output, so that it surely still runs when
    the second asks; continued, it completes."""
    output = tmp_path / "digits.parquet"
    env = cli_env(tmp_path / "data", prefect_api)
    args = predict_args(reference, digit_folder, output)
    first = start([*DIGITFLOW, *args], env)
    wait_until(lambda: lock_holder(output) == first.pid, first, "the first run's lock")
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = digitflow(*args, env=env)
        assert_one_line_error(second, f"{output}: in use by another", f"pid {first.pid} on")
        assert lock_holder(output) == first.pid  # untouched, and so is its work folder
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert_complete(output, digit_folder)


def test_a_killed_runs_lock_is_taken_over_and_resumed(
    reference: dict[str, Any], digit_folder: Path, prefect_api: str, tmp_path: Path
) -> None:
    output = tmp_path / "digits.parquet"
    parts = output.with_name(output.name + ".parts")
    env = cli_env(tmp_path / "data", prefect_api)
    args = predict_args(reference, digit_folder, output)
    first = start([*DIGITFLOW, *args], env)
    wait_until(lambda: part_rows(parts) >= 20, first, "two scored shards")
    kill(first)
    finished = part_rows(parts)
    assert lock_holder(output) == first.pid  # its lock file stays; the kernel let go of it

    done = digitflow(*args, "--resume", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["resumed"] == finished
    assert_complete(output, digit_folder)


def test_three_runs_started_at_the_same_moment(
    reference: dict[str, Any], digit_folder: Path, prefect_api: str, tmp_path: Path
) -> None:
    """Whichever takes the output first completes; each other one refuses in one line, or, if
    the output was free again by then, runs after it. Never a traceback, never a mixed output."""
    output = tmp_path / "digits.parquet"
    args = predict_args(reference, digit_folder, output)
    runs = [start([*DIGITFLOW, *args], cli_env(tmp_path / "data", prefect_api)) for _ in range(3)]
    results = [(run, *run.communicate(timeout=300)) for run in runs]
    assert any(run.returncode == 0 for run, _, _ in results), results
    for run, out, err in results:
        assert "Traceback" not in out + err, err
        if run.returncode != 0:
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and "in use by another digitflow predict" in lines[0], err
    assert_complete(output, digit_folder)
