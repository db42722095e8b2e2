"""Where batch prediction reads its images and writes its rows, checked before any work: the
image source (a local folder, or any fsspec URL), the default output path, and the shards.
No Prefect here, so `digitflow predict` checks its arguments before Prefect even starts.

    source, output = check_arguments("scans/", None)   # -> DIGITFLOW_HOME/predictions/scans.parquet
    for files in shards(source.listing(skipped), 5000, workers, done): ...
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from flows.settings import data_home
from netcore.errors import NetcoreError
from netcore.images import is_image_name
from netcore.predictions import output_format
from netcore.scan import LocalFiles, scan_images


class PredictError(NetcoreError):
    """A batch prediction could not finish (its finished shards are kept for --resume)."""


def default_workers() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class Source:
    """Where the images are: `listing(skipped)` yields relative paths, `opener` opens them."""

    listing: Callable[[Counter], Iterator[str]]
    opener: Callable[[str], BinaryIO]
    shown_as: str


def image_source(location: str) -> Source:
    """A local folder (file:// too), or any other fsspec URL (e.g. s3://bucket/scans)."""
    if "://" not in location or location.startswith("file://"):
        root = Path(location.removeprefix("file://")).resolve()
        if not root.is_dir():
            raise PredictError(f"{location}: no such folder")
        return Source(lambda skipped: scan_images(root, skipped), LocalFiles(root), str(root))
    import fsspec

    fs, root = fsspec.core.url_to_fs(location)
    root = root.rstrip("/")
    if not fs.isdir(root):
        raise PredictError(f"{location}: not a folder")
    return Source(lambda skipped: _walk(fs, root, skipped), FsspecFiles(fs, root), location)


def _walk(fs: Any, root: str, skipped: Counter) -> Iterator[str]:
    for folder, _, files in fs.walk(root):
        prefix = folder[len(root) :].strip("/")
        for name in files:
            if is_image_name(name):
                yield f"{prefix}/{name}" if prefix else name
            else:
                skipped["not an image"] += 1


class FsspecFiles:
    """Opens files by their path relative to a root on an fsspec filesystem (picklable)."""

    def __init__(self, fs: Any, root: str):
        self.fs, self.root = fs, root

    def __call__(self, relative: str) -> BinaryIO:
        return self.fs.open(f"{self.root}/{relative}", "rb")


def default_output(location: str) -> Path:
    """DIGITFLOW_HOME/predictions/<the input folder's name>.parquet"""
    name = location.rstrip("/").rsplit("/", 1)[-1] or "predictions"
    return data_home() / "predictions" / f"{name}.parquet"


def check_arguments(input: str, output: str | None) -> tuple[Source, Path]:
    """The image source and the output path, or a PredictError / ValueError saying what is
    wrong with them (before any work is done). A missing output folder is created."""
    source = image_source(input)
    output_path = Path(output) if output else default_output(input)
    output_format(output_path)
    check_writable(output_path.parent)
    return source, output_path


def check_writable(folder: Path) -> None:
    """Create `folder` if it is missing and write (and remove) a file in it, as the output and
    its work folder will be written there; a PredictError says why that fails."""
    if folder.exists() and not folder.is_dir():
        raise PredictError(f"{folder}: is a file, not a folder for the output")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise PredictError(f"{folder}: cannot write the output there ({reason})") from None


def shards(
    paths: Iterable[str], size: int, parts: int, done: set[str]
) -> Iterator[tuple[str, ...]]:
    """The paths not in `done`, in rounds of `parts` groups of `size` (one group per worker).
    The listing is read one round ahead: the last round, whatever is left, is cut into `parts`
    equal groups, so that no worker idles at the end while another finishes (10,000 files, size
    5,000, 2 workers: 5,000 + 5,000; 12,000: 5,000 + 5,000, then 1,000 + 1,000)."""
    pending = (path for path in paths if path not in done)
    ahead: deque[str] = deque()
    while True:
        ahead.extend(itertools.islice(pending, parts * size + 1 - len(ahead)))
        last = len(ahead) <= parts * size
        for index in range(parts):
            take = len(ahead) // (parts - index) if last else size
            if take:
                yield tuple(ahead.popleft() for _ in range(take))
        if last:
            return
