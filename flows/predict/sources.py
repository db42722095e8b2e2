"""Where batch prediction reads its images and writes its rows, checked before any work: the
image source (a local folder or any fsspec URL, listed the same way) and the output path.
No Prefect here, so `digitflow predict` checks its arguments before Prefect even starts.

    source, output = check_arguments("scans/", None)   # -> DIGITFLOW_HOME/predictions/scans.parquet
    skipped = collections.Counter()
    for relative in source.listing(skipped):   # "a/3.png", "b/scan 7.JPG", ...
        with source.opener(relative) as stream: ...
    print(skipped)   # Counter({'not an image': 12, 'link out of the folder': 1})

Listing a local folder (`scan_images`):
- One directory at a time with os.scandir: nothing holds the whole listing, only the folders still
  to visit. Files come in directory order (not sorted: sorting needs the whole listing).
- Image files are matched by extension (netcore.images.EXTENSIONS, any case); every other entry
  is counted in `skipped` under a reason, never silently dropped.
- Symbolic links are followed only when they resolve inside the root: a link out of the folder is
  skipped. Each directory is entered once (by device and inode), so a symlink loop cannot hang
  the scan and a linked directory is not listed twice.
- FIFOs, sockets and devices are skipped: opening a FIFO named x.png would block forever.
An fsspec URL is listed with the filesystem's walk, images matched by extension alike.
`LocalFiles(root)` and `FsspecFiles(fs, root)` open a listed file again by its relative path
(picklable, for worker processes).
"""

from __future__ import annotations

import functools
import io
import itertools
import os
import stat
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from flows.paths import default_predictions
from flows.predict.output import output_format
from flows.registry.store import check_bucket, is_url, open_location, storage_errors
from netcore.errors import DataFileError, NetcoreError
from netcore.images import SMALL_FILE_BYTES, is_image_name


class PredictError(NetcoreError):
    """A batch prediction could not finish (its finished shards are kept for --resume)."""


def default_workers() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Jobs of at most this many files are scored in the flow's own process, without worker
# processes: starting those costs more than they save (docs/benchmarks.md, "Small jobs").
SMALL_JOB = 1000


def is_small(source: Source) -> bool:
    """Whether `source` holds at most SMALL_JOB image files: a look at the start of its
    listing, which stops after SMALL_JOB + 1 (a few milliseconds for a local folder)."""
    return sum(1 for _ in itertools.islice(source.listing(Counter()), SMALL_JOB + 1)) <= SMALL_JOB


@dataclass
class Source:
    """Where the images are: `listing(skipped)` yields relative paths, `opener` opens them."""

    listing: Callable[[Counter], Iterator[str]]
    opener: Callable[[str], BinaryIO]
    shown_as: str


def image_source(location: str) -> Source:
    """A local folder (file:// too), or any other fsspec URL (e.g. s3://bucket/scans)."""
    if not is_url(location):
        root = Path(location.removeprefix("file://")).resolve()
        if not root.is_dir():
            raise PredictError(f"{location}: no such folder")
        return Source(lambda skipped: scan_images(root, skipped), LocalFiles(root), str(root))
    fs, root = open_location(location)
    with storage_errors(location):
        fs.invalidate_cache(root)
        if not fs.isdir(root):
            check_bucket(fs, root)  # a missing bucket says so
            raise PredictError(f"{location}: not a folder (nothing under that prefix)")
    return Source(functools.partial(_walk, fs, root, location), FsspecFiles(fs, root), location)


def _walk(fs: Any, root: str, location: str, skipped: Counter) -> Iterator[str]:
    """The image files under `root` on an object store (or any fsspec filesystem), one
    "folder" (a prefix up to the next `/`, listed whole) at a time. Each folder's listing is
    dropped from s3fs's listings cache once walked: it keeps kilobytes a key
    (docs/scaling.md), so a run over millions of files would otherwise hold all of them."""
    with storage_errors(location):
        for folder, _, files in fs.walk(root):
            prefix = folder[len(root) :].strip("/")
            for name in files:
                if is_image_name(name):
                    yield f"{prefix}/{name}" if prefix else name
                else:
                    skipped["not an image"] += 1
            fs.invalidate_cache(folder)


class FsspecFiles:
    """Opens files by their path relative to a root on an fsspec filesystem (picklable): one
    GET each on an object store (fs.open would ask for the size first, a second request)."""

    def __init__(self, fs: Any, root: str):
        self.fs, self.root = fs, root

    def __call__(self, relative: str) -> BinaryIO:
        return io.BytesIO(self.fs.cat_file(f"{self.root}/{relative}", **self.one_request))

    @property
    def one_request(self) -> dict[str, int]:
        """Options for reading a file whole with one request: s3fs otherwise asks for its size
        first (a HEAD), to split a large file over concurrent requests."""
        return {"max_concurrency": 1} if "s3" in self.fs.protocol else {}


# Files fetched at once from an object store when scoring (ReadAhead): their bytes are held
# until read, so memory grows with this times the largest file.
READ_AHEAD = 32


def reading_ahead(opener: Callable[[str], BinaryIO], names: Sequence[str]) -> Callable:
    """An opener for reading `names` in this order. From an object store each file costs a
    round trip, and one at a time a worker mostly waits (62 MNIST files a second from the S3
    test server, docs/scaling.md): the next READ_AHEAD are fetched together, concurrently
    (fsspec's cat). A local folder's opener is returned as it is."""
    return ReadAhead(opener, names) if isinstance(opener, FsspecFiles) else opener


class ReadAhead:
    def __init__(self, files: FsspecFiles, names: Sequence[str]):
        self.files = files
        self.names = list(names)
        self.position = {name: index for index, name in enumerate(self.names)}
        self.fetched: dict[str, bytes | BaseException] = {}

    def __call__(self, name: str) -> BinaryIO:
        if name not in self.fetched:
            if name not in self.position:
                return self.files(name)
            start = self.position[name]
            batch = self.names[start : start + READ_AHEAD]
            # cat_ranges, not cat: cat would read "[", "*" and "?" in a name as a pattern.
            paths = [f"{self.files.root}/{each}" for each in batch]
            found = self.files.fs.cat_ranges(
                paths, None, None, on_error="return", **self.files.one_request
            )
            self.fetched = dict(zip(batch, found, strict=True))
        data = self.fetched.pop(name)
        if isinstance(data, BaseException):
            raise data
        return io.BytesIO(data)


def check_arguments(input: str, output: str | None, model: str | None = None) -> tuple[Source, str]:
    """The image source and the output location (a local path or a URL), or a PredictError /
    ValueError saying what is wrong with them (before any work is done; a model on an object
    store: whether its bucket is there). A missing output folder is created."""
    if model and is_url(model):
        fs, path = open_location(model)
        with storage_errors(model):
            check_bucket(fs, path)
    source = image_source(input)
    output = output or str(default_predictions(input))
    output_format(output)
    if is_url(output):
        check_writable_store(output)
    else:
        check_writable(Path(output).parent)
    return source, output


def check_writable_store(output: str) -> None:
    """Write (and remove) an object beside `output` on its object store, as the output, its
    work folder and its lock will be written there: an unreachable store, a missing bucket or
    refused credentials are a StorageError in one line, before anything starts."""
    fs, path = open_location(output)
    probe = f"{path}.probe-{uuid.uuid4().hex[:12]}"
    with storage_errors(output):
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)


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


def scan_images(root: str | Path, skipped: Counter | None = None) -> Iterator[str]:
    """Yield the relative paths ("/"-separated) of the image files under `root`; count every
    other entry in `skipped` by reason. Raises DataFileError if `root` is not a folder."""
    skipped = skipped if skipped is not None else Counter()
    real_root = os.path.realpath(root)
    try:
        root_stat = os.stat(real_root)
    except OSError as error:
        raise DataFileError(root, f"cannot read the folder ({error.strerror})") from None
    if not stat.S_ISDIR(root_stat.st_mode):
        raise DataFileError(root, "is not a folder")
    seen = {(root_stat.st_dev, root_stat.st_ino)}
    pending = [("", real_root)]
    while pending:
        prefix, directory = pending.pop()
        subfolders = []
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    relative = prefix + entry.name
                    # The common entry first, for no system call and no function call: a regular
                    # file (its type comes with the listing), named as an image.
                    if entry.is_file(follow_symlinks=False) and is_image_name(entry.name):
                        yield relative
                        continue
                    kind = _kind(entry, real_root, seen)
                    if kind == "image":
                        yield relative
                    elif kind == "folder":
                        subfolders.append((relative + "/", entry.path))
                    else:
                        skipped[kind] += 1
        except OSError:
            skipped["unreadable folder"] += 1
        pending.extend(reversed(subfolders))


def _kind(entry: os.DirEntry, real_root: str, seen: set) -> str:
    """'image', 'folder', or the reason the entry is skipped. Plain entries cost no system call
    (the type comes from the directory listing); links and folders cost one stat."""
    try:
        if entry.is_symlink():
            target = os.path.realpath(entry.path)
            if os.path.commonpath([real_root, target]) != real_root:
                return "link out of the folder"
            if not os.path.exists(target):
                return "broken link"
        if entry.is_dir():
            info = entry.stat()
            identity = (info.st_dev, info.st_ino)
            if identity in seen:
                return "folder already listed (link loop or repeat)"
            seen.add(identity)
            return "folder"
        if not entry.is_file():
            return "not a regular file"
    except (OSError, ValueError):
        return "unreadable entry"
    return "image" if is_image_name(entry.name) else "not an image"


class LocalFiles:
    """Opens files by their path relative to a root folder. A file of up to SMALL_FILE_BYTES (a
    digit, mostly: a few hundred bytes) comes back read whole, in memory: three system calls
    and no file object, whose making and buffer were a good part of reading such a file. A
    larger one comes back as an open file."""

    def __init__(self, root: str | Path):
        self.root = str(root)

    def __call__(self, relative: str) -> BinaryIO:
        descriptor = os.open(os.path.join(self.root, relative), os.O_RDONLY | os.O_CLOEXEC)
        try:
            # One read returns the whole of a regular file up to the size asked (POSIX).
            data = os.read(descriptor, SMALL_FILE_BYTES + 1)
            if len(data) > SMALL_FILE_BYTES:
                os.lseek(descriptor, 0, os.SEEK_SET)
                return open(descriptor, "rb")  # it closes the descriptor
        except BaseException:
            os.close(descriptor)
            raise
        os.close(descriptor)
        return io.BytesIO(data)

    def __repr__(self) -> str:
        return f"LocalFiles({self.root!r})"
