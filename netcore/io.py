"""Writing files so that a crash never leaves half of one, and hashing them: the one place for both.

    with atomic_path("out/model.safetensors") as tmp:   # a hidden temporary name beside it
        save_file(tensors, str(tmp))                     # write it any way you like
    # now out/model.safetensors is the complete new file, on disk

    write_atomic(path, lambda tmp: tmp.write_text(text))  # the same, as one call
    if write_new(path, data): ...                         # created here, or it existed: False
    write_json(path, document); write_npy(path, array)     # the common cases
    sha256_file(path); stable_hash({"a": 1})               # hex digests

The temporary file lives in the destination folder (a rename never crosses file systems), is
flushed to the disk (fsync) before it is renamed over the destination, and the folder is synced
after, so that after a crash or power loss the path holds the old file or the complete new one,
never a mix. On any error the temporary file is removed and the destination is left as it was; a
full disk (ENOSPC, EDQUOT or EFBIG) becomes a DiskFullError naming the destination, one line for
the user. `writing(location)` does that last part for writes that are not atomic (a folder being
assembled, say). `write_new` is the same for a file that must not exist yet: it is linked into
place instead of renamed, so of two writers exactly one creates it, complete.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from netcore.errors import DiskFullError

# Bytes read at a time when hashing: large enough to be fast, small enough to bound memory.
CHUNK = 1 << 20
# Temporary files are named ".<name>.<random>.tmp" beside their destination; TEMPORARY_GLOB
# finds the ones a killed writer left behind.
TEMPORARY_GLOB = ".*.tmp"
# What a write fails with when there is no room: the device is full, the user's disk quota is
# used up, or the file would pass this process's file-size limit (RLIMIT_FSIZE).
NO_ROOM = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file would pass this process's file-size limit",
}


def temporary_name(path: str | Path) -> Path:
    """A fresh hidden name beside `path` for writing it: ".<name>.<random>.tmp"."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; on a clean exit the file is synced to the
    disk and renamed to `path` (atomic on POSIX); on an error it is removed. The destination's
    folder is created if needed."""
    path = Path(path)
    temporary = temporary_name(path)
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield temporary
            _fsync(temporary)
            move_into_place(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def move_into_place(source: str | Path, destination: str | Path) -> None:
    """Put the complete, synced file `source` at `destination` (the same file system) at once,
    replacing any file there, and sync the folder's entry."""
    os.replace(source, destination)
    _fsync(Path(destination).parent)


@contextmanager
def writing(location: str | Path) -> Iterator[None]:
    """Within the block, a write that fails for want of room (NO_ROOM) raises DiskFullError
    naming `location` (the file or folder being written) instead of a bare OSError."""
    try:
        yield
    except OSError as error:
        if error.errno not in NO_ROOM:
            raise
        reason = f"{NO_ROOM[error.errno]} ({errno.errorcode[error.errno]})"
        raise DiskFullError(location, f"cannot write: {reason}") from None


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(temporary_path)`, then put the file at `path` atomically (see atomic_path)."""
    with atomic_path(path) as temporary:
        write(temporary)
    return Path(path)


def write_new(path: str | Path, data: bytes) -> bool:
    """Create `path` holding `data`, complete and synced, unless it exists: True when this call
    created it, False when it was already there (its bytes are left alone). A hard link of the
    synced temporary file is the exclusive step: it fails if `path` exists, and never shows a
    half-written file, as creating the final name and then writing it (O_EXCL) would."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(path)
    try:
        temporary.write_bytes(data)
        _fsync(temporary)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        _fsync(path.parent)
        return True
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: str | Path, document: Any) -> Path:
    """`document` as indented JSON, atomically."""
    text = json.dumps(document, indent=2) + "\n"
    return write_atomic(path, lambda temporary: temporary.write_text(text))


def write_npy(path: str | Path, array: np.ndarray) -> Path:
    """Save `array` as .npy (never pickled), atomically."""
    # Through memory: np.save into a real file writes with C's fwrite, whose failure on a full
    # disk is an OSError without an errno ("N requested and M written"), not a DiskFullError.
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return write_atomic(path, lambda temporary: temporary.write_bytes(buffer.getbuffer()))


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, read in CHUNK-sized blocks."""
    with open(path, "rb") as f:
        return sha256_stream(f)


def sha256_stream(stream: Any) -> str:
    """The hex sha256 of everything a binary stream (any object with `read(n)`) has left."""
    digest = hashlib.sha256()
    while block := stream.read(CHUNK):
        digest.update(block)
    return digest.hexdigest()


def stable_hash(document: Any) -> str:
    """sha256 of a JSON-able value, independent of dict order."""
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def files_intact(files: Mapping[str, Mapping[str, Any]]) -> bool:
    """True when every `{"path": ..., "sha256": ...}` entry still names a file with that hash."""
    return all(
        Path(entry["path"]).is_file() and sha256_file(entry["path"]) == entry["sha256"]
        for entry in files.values()
    )
