"""A full disk, for real: batch prediction's part files and merge, a training checkpoint,
publishing, the prepared arrays and a report, each running out of room (tests/reliability/disk.py:
a small tmpfs that fills up, ENOSPC; or a file-size limit, EFBIG).

Each must end in one line naming where it could not write, leave no half-written file (no
visible partial output, no ".*.tmp", no staging folder in the registry), and complete when run
again once there is room (issue 12: a 60- to 97-line traceback, and a publish that left its
partial staging copy behind, keeping the disk full).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from flows.registry.versions import STAGING, list_versions, load_published
from flows.training.prepare import prepare
from netcore.errors import DiskFullError
from netcore.io import sha256_file
from tests.conftest import TRAIN_FILE
from tests.reliability.conftest import EPOCHS
from tests.reliability.disk import SmallDisk, file_size_limit, files_limited_to
from tests.reliability.on_disk import checkpoint_epochs, image_files, temporary_files
from tests.reliability.processes import (
    assert_error_after_stages,
    assert_one_line_error,
    cli_env,
    digitflow,
)

SHARD = 10


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk | None]:
    """A tmpfs of the test's own (None where mounting is not allowed: not root)."""
    disk = SmallDisk.mount(tmp_path / "disk")
    yield disk
    if disk is not None:
        disk.unmount()


def needs(disk: SmallDisk | None) -> SmallDisk:
    if disk is None:
        pytest.skip("needs a small tmpfs of its own (mount needs root with CAP_SYS_ADMIN)")
    return disk


def predict_args(
    reference: dict[str, Any], folder: Path, output: Path, shard: int = SHARD, workers: int = 2
) -> list[str]:
    return [
        *("predict", str(folder), "--model", str(reference["registry"])),
        *("--output", str(output), "--shard-size", str(shard), "--workers", str(workers)),
    ]


def assert_every_file_once(output: Path, folder: Path) -> None:
    paths = pq.read_table(output, columns=["path"]).column("path").to_pylist()
    assert len(paths) == len(set(paths)) and set(paths) == image_files(folder)


@pytest.fixture(scope="module")
def two_thousand(small_mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 2,000 training digits of the subset as PNG files, 0000.png to 1999.png."""
    folder = tmp_path_factory.mktemp("two-thousand")
    images = pq.read_table(small_mnist_dir / TRAIN_FILE).column("image").to_pylist()
    for index, image in enumerate(images):
        (folder / f"{index:04d}.png").write_bytes(image["bytes"])
    return folder


def test_part_files_on_a_full_disk_then_resume(
    reference: dict[str, Any],
    two_thousand: Path,
    prefect_api: str,
    small_disk: SmallDisk | None,
    tmp_path: Path,
) -> None:
    """Two shards of 1,000 files, one worker: a part file is 67 KB, a listing 12 KB. With room
    for everything else (job.json, the lock, the output's header and the two listings in flight
    take at most 9 pages) and not for a part, the first part fails whatever the order."""
    env = cli_env(tmp_path / "data", prefect_api)
    if small_disk is not None:  # ENOSPC
        output = small_disk.folder / "out.parquet"
        small_disk.leave(48 << 10)
        limit = None
    else:  # EFBIG: a listing fits, a part file does not
        output = tmp_path / "out.parquet"
        limit = file_size_limit(32 << 10)
    parts = output.with_name(output.name + ".parts")
    args = predict_args(reference, two_thousand, output, shard=1000, workers=1)
    failed = digitflow(*args, env=env, preexec_fn=limit)
    line = assert_one_line_error(failed, "cannot write", "rerun with --resume")
    assert line.startswith(f"digitflow: error: {parts}/part-") and ".parquet: cannot" in line
    assert not output.exists() and temporary_files(output.parent) == []

    if small_disk is not None:
        small_disk.free()
    done = digitflow(*args, "--resume", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert_every_file_once(output, two_thousand)
    assert not parts.exists()


def test_merge_over_the_file_size_limit_then_resume(
    reference: dict[str, Any], digit_folder: Path, prefect_api: str, tmp_path: Path
) -> None:
    """Every part fits (a few KB each), the output they are merged into as they come does not
    (EFBIG): the merge fails part-way."""
    output = tmp_path / "out.parquet"
    parts = output.with_name(output.name + ".parts")
    env = cli_env(tmp_path / "data", prefect_api)
    args = predict_args(reference, digit_folder, output)
    failed = digitflow(*args, env=env, preexec_fn=file_size_limit(16 << 10))
    assert_one_line_error(failed, f"{output}: cannot write", "EFBIG", "rerun with --resume")
    assert not output.exists() and temporary_files(tmp_path) == []
    finished = sum(pq.read_metadata(part).num_rows for part in parts.glob("part-*.parquet"))
    assert finished > 0  # parts were written; the output they stream into was not

    done = digitflow(*args, "--resume", "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed"] == finished  # no finished shard scored again
    assert summary["images"] == len(image_files(digit_folder)) - finished
    assert_every_file_once(output, digit_folder)


def test_checkpoint_on_a_full_disk_then_resume(
    reference: dict[str, Any],
    quick_training: list[str],
    prefect_api: str,
    small_disk: SmallDisk | None,
    tmp_path: Path,
) -> None:
    """The run folders on a disk with room for one checkpoint (about 200 KB with 32 hidden
    units), not for writing the second beside it: epoch 2's checkpoint fails."""
    disk = needs(small_disk)
    home = tmp_path / "data"
    home.mkdir()
    (home / "runs").symlink_to(disk.folder)
    disk.leave(300 << 10)
    env = cli_env(home, prefect_api)
    failed = digitflow(*quick_training, env=env)
    assert_error_after_stages(failed, "checkpoint.safetensors: cannot write", "ENOSPC")
    assert checkpoint_epochs(home) == 1  # the last good checkpoint, intact
    assert temporary_files(disk.folder) == []
    assert list_versions(str(home / "models")) == []

    disk.free()
    done = digitflow(*quick_training, env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed_from_epoch"] == 1 and summary["epochs"] == EPOCHS
    resumed, uninterrupted = Path(summary["artifact"]), Path(reference["artifact"])
    assert sha256_file(resumed / "model.safetensors") == sha256_file(
        uninterrupted / "model.safetensors"
    )


def test_publish_on_a_full_disk_leaves_no_staging(
    quick_training: list[str], prefect_api: str, small_disk: SmallDisk | None, tmp_path: Path
) -> None:
    disk = needs(small_disk)
    registry = disk.folder / "models"
    disk.leave(64 << 10)  # a version is several hundred KB (weights, ONNX, figures)
    env = cli_env(tmp_path / "data", prefect_api)
    args = [*quick_training, "--registry", str(registry)]
    failed = digitflow(*args, env=env)
    assert_error_after_stages(failed, f"{registry}: cannot write", "ENOSPC")
    assert list((registry / STAGING).iterdir()) == []  # the partial copy is gone
    assert list_versions(str(registry)) == [] and temporary_files(disk.folder) == []

    disk.free()
    done = digitflow(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == "v1"
    assert load_published(str(registry)).version == "v1"  # every checksum verified


def test_prepared_arrays_over_the_file_size_limit(small_mnist_dir: Path, tmp_path: Path) -> None:
    """In this process (the CLI turns a DiskFullError into its one line, as the tests above
    show): it names its file, and nothing half-written stays."""
    raw = {"train": str(small_mnist_dir / "train-00000-of-00001.parquet")}
    with files_limited_to(64 << 10), pytest.raises(DiskFullError) as full:
        prepare(raw, tmp_path / "processed")  # 2,000 x 784 pixels: 1.5 MB
    assert full.value.path == str(tmp_path / "processed" / "train_pixels.npy")
    assert "EFBIG" in str(full.value) and temporary_files(tmp_path) == []


def test_a_report_on_a_full_disk(
    reference: dict[str, Any], prefect_api: str, small_disk: SmallDisk | None, tmp_path: Path
) -> None:
    disk = needs(small_disk)
    page = disk.folder / "report.html"
    disk.leave(16 << 10)  # the page inlines four figures: hundreds of KB
    args = ["report", "--registry", str(reference["registry"]), "--output", str(page)]
    env = cli_env(tmp_path / "data", prefect_api)
    assert_one_line_error(digitflow(*args, env=env), f"{page}: cannot write", "ENOSPC")
    assert not page.exists() and temporary_files(disk.folder) == []
    disk.free()
    assert digitflow(*args, env=env).returncode == 0 and page.is_file()
