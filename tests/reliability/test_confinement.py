"""Where runs write: nothing outside the chosen output location and the data directory, and
prediction rows name files by their path relative to the input folder, never outside it.

Runs are confined (tests/reliability/footprint.py: their own HOME, temporary and working folders,
the tools' homes in the data directory, as in the container) and every file tree around them is
snapshotted before and after: the input, a folder its symbolic links point into, the registry,
the source data, HOME, the temporary and working folders.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.csv

from tests.reliability.footprint import changes, confined_env, outside, snapshot
from tests.reliability.processes import digitflow

ODD_NAMES = ["new\nline.png", "-rf.png", " leading space.png", "ünï cödé.PNG", "a;b|c.png"]
# Skipped, and counted: a dotfile (no extension, as os.path.splitext reads "..png"), the links
# out of the folder, the link back up into it (a loop).
SKIPPED = {"not an image": 1, "link out of the folder": 2}


def test_training_writes_nothing_outside_its_data_directory(reference: dict[str, Any]) -> None:
    # The reference run's output location, the registry, is inside its data directory.
    assert reference["written_elsewhere"] == []


def make_input(digits: Path, root: Path) -> tuple[Path, set[str]]:
    """An input folder: 20 digits, awkward names, links inside it, out of it and in a loop;
    returns it and the relative paths of the image files it holds (links inside followed)."""
    folder, elsewhere = root / "in", root / "outside"
    pngs = sorted((digits / "digits" / "batch 0").iterdir())[:20]
    (folder / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    names = [f"{'sub/' if index % 2 else ''}d{index}.png" for index in range(len(pngs))]
    for name, png in zip(names, pngs, strict=True):
        shutil.copyfile(png, folder / name)
    for name in ODD_NAMES:
        shutil.copyfile(pngs[0], folder / name)
    shutil.copyfile(pngs[1], elsewhere / "secret.png")
    shutil.copyfile(pngs[2], folder / "..png")
    (folder / "alias.png").symlink_to("d0.png")  # inside: scored under its own name
    (folder / "link-out.png").symlink_to(elsewhere / "secret.png")  # outside: skipped
    (folder / "outside-dir").symlink_to(elsewhere)  # outside: skipped
    (folder / "sub" / "loop").symlink_to("..")  # a loop: listed once
    return folder, {*names, *ODD_NAMES, "alias.png"}


def test_prediction_writes_only_its_output_and_rows_stay_inside_the_input(
    reference: dict[str, Any], digit_folder: Path, prefect_api: str, tmp_path: Path
) -> None:
    folder, expected = make_input(digit_folder, tmp_path)
    env, cwd = confined_env(tmp_path, prefect_api)
    output = tmp_path / "out" / "rows.csv"
    watched = (tmp_path, reference["registry"])
    before = snapshot(*watched)
    done = digitflow(
        *("predict", str(folder), "--model", str(reference["registry"]), "--output", str(output)),
        *("--workers", "2", "--json"),
        env=env,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr
    reasons = json.loads(done.stdout)["skipped_reasons"]
    assert reasons.pop("folder already listed (link loop or repeat)") == 1
    assert reasons == SKIPPED
    written = changes(before, snapshot(*watched))
    assert outside(written, [output.parent, tmp_path / "data"], temporary=tmp_path / "tmp") == []
    assert {p for p in written if p.startswith(str(output.parent))} == {
        str(output.parent),
        str(output),
    }  # the output, its folder created; the work folder gone

    paths = pyarrow.csv.read_csv(output).column("path").to_pylist()
    assert sorted(paths) == sorted(expected)
    real_input = folder.resolve()
    for path in paths:
        assert not PurePosixPath(path).is_absolute() and ".." not in PurePosixPath(path).parts
        assert (folder / path).resolve().is_relative_to(real_input), path
        assert os.path.isfile(folder / path)
