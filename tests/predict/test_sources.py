"""flows.predict.sources: the lazy folder listing of batch prediction, on a real directory tree with
nested folders, mixed-case extensions, symlinks in and out of the folder, a symlink loop and a
FIFO."""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path

import pytest

from flows.predict.sources import LocalFiles, scan_images
from netcore.errors import DataFileError
from netcore.images import SMALL_FILE_BYTES


def tree(root: Path, outside: Path) -> None:
    (root / "a" / "b").mkdir(parents=True)
    for name in ["one.png", "a/two.JPG", "a/b/three.TiFf", "a/b/four.webp", "five.Jpeg"]:
        (root / name).write_bytes(b"x")
    for name in ["notes.txt", "a/model.safetensors", "a/b/README"]:
        (root / name).write_bytes(b"x")
    (root / "a" / "folder.png").mkdir()  # a folder named like an image is a folder
    (outside / "secret.png").write_bytes(b"x")
    (outside / "photos").mkdir()
    (outside / "photos" / "p.png").write_bytes(b"x")
    os.symlink(outside / "secret.png", root / "escape.png")  # a file link out of the folder
    os.symlink(outside / "photos", root / "a" / "photos")  # a folder link out of the folder
    os.symlink("../../one.png", root / "a" / "b" / "alias.png")  # a link inside: kept
    os.symlink("..", root / "a" / "b" / "up")  # a loop back to a/
    os.symlink(root, root / "a" / "root")  # a loop back to the root
    os.symlink("missing.png", root / "broken.png")
    os.mkfifo(root / "pipe.png")  # opening it would block forever


def test_scan_lists_images_only_and_counts_the_rest(tmp_path: Path) -> None:
    root, outside = tmp_path / "in", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    tree(root, outside)
    skipped: Counter = Counter()
    found = sorted(scan_images(root, skipped))
    assert found == sorted(
        ["one.png", "five.Jpeg", "a/two.JPG", "a/b/three.TiFf", "a/b/four.webp", "a/b/alias.png"]
    )
    assert skipped == {
        "not an image": 3,
        "link out of the folder": 2,
        "folder already listed (link loop or repeat)": 2,
        "broken link": 1,
        "not a regular file": 1,
    }
    with LocalFiles(root)("a/b/alias.png") as stream:
        assert stream.read() == b"x"


def test_a_symlink_loop_cannot_hang_the_scan(tmp_path: Path) -> None:
    root = tmp_path / "loops"
    (root / "x" / "y").mkdir(parents=True)
    (root / "x" / "y" / "digit.png").write_bytes(b"x")
    os.symlink(root / "x", root / "x" / "y" / "again")
    os.symlink("y", root / "x" / "y2")  # the same folder under two names: listed once
    result: list[str] = []
    worker = threading.Thread(target=lambda: result.extend(scan_images(root)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert len(result) == 1 and result[0].endswith("digit.png")


def test_scan_is_lazy(tmp_path: Path) -> None:
    """The first file comes before subfolders are listed: nothing is collected up front (a file
    written into a subfolder after the first file was yielded is still found)."""
    (tmp_path / "first.png").write_bytes(b"x")
    (tmp_path / "later").mkdir()
    listing = scan_images(tmp_path)
    assert next(listing) == "first.png"
    (tmp_path / "later" / "second.png").write_bytes(b"x")
    assert list(listing) == ["later/second.png"]


def test_scan_refuses_a_missing_folder_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "file.png").write_bytes(b"x")
    for bad, why in [
        (tmp_path / "nope", "cannot read the folder"),
        (tmp_path / "file.png", "not a folder"),
    ]:
        with pytest.raises(DataFileError, match=why):
            list(scan_images(bad))


@pytest.mark.parametrize("size", [0, 300, SMALL_FILE_BYTES, SMALL_FILE_BYTES + 1, 3 << 20])
def test_local_files_open_any_size_whole(size: int, tmp_path: Path) -> None:
    """A small file comes back read at once, a larger one as a file: either way every byte,
    from the start, and no descriptor is left open."""
    data = os.urandom(size)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.png").write_bytes(data)
    opened_before = len(os.listdir("/proc/self/fd"))
    with LocalFiles(tmp_path)("sub/x.png") as stream:
        assert stream.read(SMALL_FILE_BYTES + 1) + stream.read() == data
        stream.seek(0)
        assert stream.read() == data
    assert len(os.listdir("/proc/self/fd")) == opened_before
    with pytest.raises(FileNotFoundError):
        LocalFiles(tmp_path)("sub/missing.png")
    with pytest.raises(IsADirectoryError):
        LocalFiles(tmp_path)("sub")
    assert len(os.listdir("/proc/self/fd")) == opened_before
