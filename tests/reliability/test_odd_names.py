"""Any file name the OS allows is scored, exactly once, and can be found again from the output.

The real `digitflow predict` on the 10,000 real MNIST test digits as PNG files, plus copies of a
digit under names that break naive code: a byte that is not UTF-8 (0xff: issue 12, where such a
name failed its whole shard, and every --resume the same way), a valid name that spells that
byte's escape, a newline, a leading dash, 250 bytes. The run is SIGKILLed after its first part
and resumed; then the odd names go through the CSV and JSON Lines outputs and `digitflow report`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from flows.predict.output import listed_names, read_predictions
from flows.reports.pages import least_confident_images
from netcore.mnist import read_parquet
from tests.conftest import TEST_FILE
from tests.reliability.processes import (
    DIGITFLOW,
    cli_env,
    digitflow,
    digitflow_all,
    kill,
    start,
    wait_until,
)

ODD_NAMES = [
    b"caf\xe9 \xff.png",  # Latin-1, not UTF-8
    b"caf\\xe9 \\xff.png",  # valid UTF-8: the escape spelled out, a different file
    b"two\nlines.png",
    b"-rf.png",
    b"x" * 246 + b".png",  # 250 bytes
]


def image_names(folder: Path) -> set[bytes]:
    """Every file under `folder`, as the bytes of its relative path."""
    found = set()
    for directory, _, files in os.walk(os.fsencode(folder)):
        prefix = os.path.relpath(directory, os.fsencode(folder))
        for name in files:
            found.add(name if prefix == b"." else prefix + b"/" + name)
    return found


@pytest.fixture(scope="module")
def odd_folder(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10,000 MNIST test digits (digits/<index>_<label>.png) and the odd names at the top (listed
    first, so the killed run has scored them: --resume must recognise them) and in a folder of
    their own (listed last: the resumed run scores them)."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("odd-names")
    pixels, labels = read_parquet(mnist_dir / TEST_FILE)
    (root / "digits").mkdir()
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        Image.fromarray(np.asarray(image)).save(root / "digits" / f"{index:05d}_{label}.png")
    digit = (root / "digits" / f"00000_{labels[0]}.png").read_bytes()
    (root / "zz-odd").mkdir()
    for folder in (b"", b"zz-odd/"):
        for name in ODD_NAMES:
            Path(os.fsdecode(os.fsencode(root) + b"/" + folder + name)).write_bytes(digit)
    return root


def test_every_name_is_scored_once_through_a_kill_and_resume(
    reference: dict[str, Any], odd_folder: Path, prefect_api: str, tmp_path: Path
) -> None:
    output = tmp_path / "odd.parquet"
    parts = output.with_name(output.name + ".parts")
    args = ["predict", str(odd_folder), "--model", str(reference["registry"])]
    args += ["--output", str(output), "--workers", "2", "--shard-size", "500"]
    env = cli_env(tmp_path / "data", prefect_api)
    process = start([*DIGITFLOW, *args], env)
    wait_until(lambda: any(parts.glob("part-*.parquet")), process, "the first part file")
    kill(process)
    assert not output.exists(), "the kill came after scoring ended"

    done = digitflow(*args, "--resume", "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    expected = image_names(odd_folder)
    assert len(expected) == 10_000 + 2 * len(ODD_NAMES)
    assert summary["resumed"] > 0 and summary["failed"] == 0
    assert summary["resumed"] + summary["images"] == len(expected)
    names = [os.fsencode(name) for name in listed_names(pq.read_table(output))]
    assert len(names) == len(set(names)) and set(names) == expected  # once each, by exact bytes


def test_odd_names_in_text_outputs_and_the_report(
    reference: dict[str, Any], odd_folder: Path, prefect_api: str, tmp_path: Path
) -> None:
    folder = odd_folder / "zz-odd"
    outputs = [tmp_path / "odd.csv", tmp_path / "odd.jsonl"]
    env = cli_env(tmp_path / "data", prefect_api)
    model = str(reference["registry"])
    commands = [["predict", str(folder), "--model", model, "--output", str(o)] for o in outputs]
    for output, done in zip(outputs, digitflow_all(commands, env), strict=True):
        assert done.returncode == 0, done.stderr
        table = read_predictions(output)
        assert {os.fsencode(name) for name in listed_names(table)} == set(ODD_NAMES)
        assert table.column("error").null_count == table.num_rows  # every one scored
        shown = {row["path"]: row["path_hex"] for row in table.to_pylist()}
        assert shown["-rf.png"] is None and shown["two\nlines.png"] is None

    page = tmp_path / "odd.html"
    args = ["--predictions", str(outputs[0]), "--input", str(folder), "--output", str(page)]
    report = digitflow("report", *args, env=env)
    assert report.returncode == 0 and page.is_file(), report.stderr
    # What the page shows, done here: each image is opened again by its exact name.
    _, captions = least_confident_images(read_predictions(outputs[0]), folder)
    assert len(captions) == len(ODD_NAMES) and not any("cannot read" in c for c in captions)
