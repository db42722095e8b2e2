"""Bad MNIST sources: each is refused with one line naming the file and its problem, before
training starts (no run folder, no prepared arrays), never with a traceback.

Every case is the 2,000/500-row real subset with one thing broken in its train file (or a file
missing). Files are named as found: the source file when it cannot be read as MNIST Parquet at
all, the downloaded copy in DIGITFLOW_HOME/raw/ when a row is wrong (row numbers are the same).
The kinds the issue names go through the real `digitflow train` (several processes at once);
every case, those included, also through the download stage's function (no Prefect: fast).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flows.training.download import download
from netcore.errors import NetcoreError
from tests.conftest import TEST_FILE, TRAIN_FILE
from tests.reliability.processes import assert_one_line_error, cli_env, digitflow_all

THROUGH_THE_CLI = (
    "truncated",
    "wrong schema",
    "label out of range",
    "wrong row count",
    "image of the wrong size",
)

Damage = Callable[[Path], None]  # breaks the train file (or the folder) in place


def _rewrite(change: Callable[[pa.Table], pa.Table]) -> Damage:
    def damage(folder: Path) -> None:
        table = pq.read_table(folder / TRAIN_FILE)
        pq.write_table(change(table), folder / TRAIN_FILE)

    return damage


def _cut(fraction: float) -> Damage:
    def damage(folder: Path) -> None:
        data = (folder / TRAIN_FILE).read_bytes()
        (folder / TRAIN_FILE).write_bytes(data[: int(len(data) * fraction)])

    return damage


def _scramble(folder: Path) -> None:
    """4 KB of random bytes a third of the way in: footer and schema intact, data pages not."""
    data = bytearray((folder / TRAIN_FILE).read_bytes())
    at = len(data) // 3
    data[at : at + 4096] = np.random.default_rng(0).bytes(4096)
    (folder / TRAIN_FILE).write_bytes(bytes(data))


def _label(row: int, value: int) -> Callable[[pa.Table], pa.Table]:
    def change(table: pa.Table) -> pa.Table:
        labels = table.column("label").to_numpy().copy()
        labels[row] = value
        return table.set_column(1, "label", pa.array(labels))

    return change


def _png(image: Image.Image) -> bytes:
    encoded = io.BytesIO()
    image.save(encoded, "PNG")
    return encoded.getvalue()


def _image(row: int, data: bytes) -> Callable[[pa.Table], pa.Table]:
    def change(table: pa.Table) -> pa.Table:
        images = table.column("image").to_pylist()
        images[row] = {"bytes": data, "path": None}
        return table.set_column(0, "image", pa.array(images, table.schema.field("image").type))

    return change


def _labels_as_text(table: pa.Table) -> pa.Table:
    return table.set_column(1, "label", table.column("label").cast(pa.string()))


CASES: dict[str, tuple[Damage, str, str]] = {
    # name: (damage, how the path named ends ("": the source folder), the problem stated)
    "truncated": (_cut(0.5), TRAIN_FILE, "cannot read as Parquet"),
    "empty file": (_cut(0), TRAIN_FILE, "cannot read as Parquet"),
    "corrupt data pages": (_scramble, TRAIN_FILE, "cannot read as Parquet"),
    "wrong schema": (
        _rewrite(lambda t: t.rename_columns(["picture", "label"])),
        TRAIN_FILE,
        "expected columns 'image' and 'label', found ['label', 'picture']",
    ),
    "labels as text": (_rewrite(_labels_as_text), TRAIN_FILE, "'label' must be integers"),
    "label out of range": (
        _rewrite(_label(17, 11)),
        "train.parquet",
        "row 17: label 11 is not a digit 0-9",
    ),
    "negative label": (_rewrite(_label(3, -1)), "train.parquet", "row 3: label -1 is not a digit"),
    "wrong row count": (
        _rewrite(lambda t: t.slice(0, 1999)),
        "train.parquet",
        "has 1999 rows, expected 2000",
    ),
    "image of the wrong size": (
        _rewrite(_image(5, _png(Image.new("L", (32, 32))))),
        "train.parquet",
        "row 5: image is a 32x32 8-bit grayscale PNG, expected 28x28",
    ),
    "colour image": (
        _rewrite(_image(9, _png(Image.new("RGB", (28, 28))))),
        "train.parquet",
        "row 9: image is a 28x28 8-bit RGB PNG",
    ),
    "not an image": (
        _rewrite(_image(1, b"GIF89a, or so it says")),
        "train.parquet",
        "row 1: not a readable image",
    ),
    "no test split": (
        lambda folder: (folder / TEST_FILE).unlink(),
        "",
        "no Parquet files for the 'test' split",
    ),
}


@pytest.fixture(scope="module")
def bad_sources(small_mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bad-sources")
    sources = {}
    for number, (name, (damage, _, _)) in enumerate(CASES.items()):
        folder = root / f"case-{number}"
        shutil.copytree(small_mnist_dir, folder)
        damage(folder)
        sources[name] = folder
    return sources


def check_named(line: str, name: str, folder: Path) -> None:
    """The error names the expected file (or the source folder) first, then the problem."""
    _, file, problem = CASES[name]
    named, _, stated = line.partition(": ")
    assert named.endswith(file or str(folder)) and problem in stated, (name, line)


def test_bad_sources_are_refused_in_one_line_before_training(
    bad_sources: dict[str, Path], quick_training: list[str], prefect_api: str, tmp_path: Path
) -> None:
    source_at = quick_training.index("--source") + 1
    commands, homes = [], []
    for name in THROUGH_THE_CLI:
        command = list(quick_training)
        command[source_at] = str(bad_sources[name])
        commands.append(command)
        homes.append(tmp_path / name.replace(" ", "-"))
    envs = [cli_env(home, prefect_api) for home in homes]
    results = digitflow_all(commands, envs, at_once=len(commands))
    for name, result, home in zip(THROUGH_THE_CLI, results, homes, strict=True):
        line = assert_one_line_error(result)
        check_named(line.removeprefix("digitflow: error: "), name, bad_sources[name])
        assert not (home / "runs").exists() and not (home / "processed").exists(), name


@pytest.mark.parametrize("name", CASES)
def test_the_download_stage_names_file_and_problem(
    name: str, bad_sources: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(NetcoreError) as caught:
        download(str(bad_sources[name]), None, tmp_path / "raw", {"train": 2000, "test": 500})
    message = str(caught.value)
    assert "\n" not in message
    check_named(message, name, bad_sources[name])
