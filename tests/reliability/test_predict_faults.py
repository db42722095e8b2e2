"""Batch prediction under faults: SIGKILLed part-way (twice), then resumed; and output locations
that cannot be written, refused before any work.

The real `digitflow predict` on digit_folder (real MNIST PNGs, broken files, non-images) with the
reference run's model. A killed run never leaves a half-written output; `--resume` scores only
what no finished shard holds, and the final output has every image file exactly once, with the
same prediction as scoring it directly in this process.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from flows.predict.sources import LocalFiles
from flows.registry.versions import load_published
from netcore.images import load_digits
from netcore.preprocess import normalize
from tests.reliability.conftest import DIGITS, SKIPPED
from tests.reliability.on_disk import image_files, part_rows
from tests.reliability.processes import (
    DIGITFLOW,
    assert_one_line_error,
    cli_env,
    digitflow,
    digitflow_all,
    kill,
    start,
    wait_until,
)

SHARD = 10


def expected_rows(registry: Path, folder: Path, paths: list[str]) -> dict[str, Any]:
    """Each file scored here, directly: (label, probabilities) or the error."""
    network = load_published(str(registry)).network
    pixels, problems = load_digits(paths, LocalFiles(folder))
    probabilities = network.predict_proba(normalize(pixels, network.config))
    return {
        path: problem or (int(p.argmax()), p)
        for path, p, problem in zip(paths, probabilities, problems, strict=True)
    }


def test_killed_twice_then_resumed_gives_every_file_once(
    reference: dict[str, Any],
    digit_folder: Path,
    prefect_api: str,
    fault_rng: np.random.Generator,
    tmp_path: Path,
) -> None:
    output = tmp_path / "new" / "folders" / "digits.parquet"  # its folders do not exist yet
    parts = output.with_name(output.name + ".parts")
    registry = reference["registry"]
    env = cli_env(tmp_path / "data", prefect_api)
    args = ["predict", str(digit_folder), "--model", str(registry), "--output", str(output)]
    args += ["--shard-size", str(SHARD), "--workers", "2"]
    files = image_files(digit_folder)

    finished = 0
    for resume in ([], ["--resume"]):
        goal = finished + SHARD * int(fault_rng.integers(1, 6))  # 1-5 more shards, then kill
        process = start([*DIGITFLOW, *args, *resume], env)
        wait_until(lambda g=goal: part_rows(parts) >= g, process, f"{goal} rows in part files")
        kill(process)
        assert not output.exists()  # never a half-written output
        finished = part_rows(parts)
        assert finished < len(files), "the kill came after scoring ended"

    done = digitflow(*args, "--resume", "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed"] == finished
    assert summary["images"] == len(files) - finished  # only what was missing was scored
    assert (summary["scored"], summary["failed"]) == (DIGITS, len(files) - DIGITS)
    assert summary["skipped"] == len(SKIPPED)
    assert not parts.exists()

    rows = pq.read_table(output).to_pylist()
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)) and set(paths) == files  # no duplicates, no gaps
    expected = expected_rows(registry, digit_folder, paths)
    for row in rows:
        want = expected[row["path"]]
        if isinstance(want, str):
            assert row["label"] is None and row["error"] == want, row
        else:
            assert row["error"] is None and row["label"] == want[0], row
            scored = [row[f"prob_{k}"] for k in range(10)]
            np.testing.assert_allclose(scored, want[1], atol=1e-5)
        assert row["model_version"] == "v1"


def flow_runs() -> int:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.count_flow_runs()


def _read_only(tmp_path: Path) -> str:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return str(folder / "out.parquet")


def _under_a_file(tmp_path: Path) -> str:
    (tmp_path / "a-file").write_text("not a folder")
    return str(tmp_path / "a-file" / "out.parquet")


OUTPUTS: dict[str, tuple[Callable[[Path], str], str]] = {
    "under a file": (_under_a_file, "a-file: is a file, not a folder"),
    "below a file": (lambda t: f"{_under_a_file(t)}/deeper.csv", "cannot write the output there"),
    "in /proc": (lambda _: f"/proc/{uuid.uuid4().hex}/out.parquet", "cannot write the output"),
    "in /sys": (lambda _: "/sys/digitflow-out.jsonl", "cannot write the output there"),
    "read-only folder": (_read_only, "cannot write the output there (Permission denied)"),
    "a folder": (lambda t: str(t), "is a directory"),
    "no format": (lambda t: str(t / "out.xlsx"), "unknown output format '.xlsx'"),
}


def test_unusable_output_locations_are_refused_before_any_work(
    reference: dict[str, Any], digit_folder: Path, prefect_api: str, tmp_path: Path
) -> None:
    cases = dict(OUTPUTS)
    if os.geteuid() == 0:
        del cases["read-only folder"]  # root writes into read-only folders
    runs_before = flow_runs()
    model = str(reference["registry"])
    results = digitflow_all(
        [
            ["predict", str(digit_folder), "--model", model, "--output", make(tmp_path)]
            for make, _ in cases.values()
        ],
        cli_env(tmp_path / "data", prefect_api),
    )
    for (_, message), result in zip(cases.values(), results, strict=True):
        assert_one_line_error(result, message)
    assert flow_runs() == runs_before  # no flow started: nothing was scored, nothing written
    assert not list(tmp_path.rglob("*.parts"))
