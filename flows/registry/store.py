"""Where a registry lives: any fsspec location (a local folder, s3://, memory://...), reached the
same way by every registry module.

    fs, root = open_registry("s3://bucket/models")   # the filesystem and the path on it
    shown = display(fs, f"{root}/v3")                # "s3://bucket/models/v3", or a local path
    digest = sha256_on(fs, f"{root}/v3/config.json")
    if create_exclusively(fs, f"{root}/v4/.claim"): ...   # True for exactly one caller
    with registry_lock(fs, root): ...                      # one writer at a time (local disks)
"""

from __future__ import annotations

import fcntl
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from netcore.errors import NetcoreError
from netcore.io import sha256_file, sha256_stream, write_new


class RegistryError(NetcoreError):
    """A registry or version is missing, incomplete, or fails its checksums."""


def open_registry(location: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem of `location` and its path there, without a trailing slash."""
    fs, root = fsspec.core.url_to_fs(str(location))
    return fs, root.rstrip("/") or "/"


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def display(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """How a path is shown to people: a local path as it is, anything else as its URL."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def sha256_on(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The sha256 of a file on any filesystem."""
    if is_local(fs):
        return sha256_file(path)
    with fs.open(path, "rb") as f:
        return sha256_stream(f)


def create_exclusively(
    fs: fsspec.AbstractFileSystem, path: str, content: bytes | None = None
) -> bool:
    """Create `path` holding `content` (default: a random token) unless it exists; False when it
    did. Readers never see it half-written: on a local disk netcore.io.write_new links a synced
    file into place; on S3 (s3fs) it is one conditional PUT (If-None-Match: *), refused when the
    object exists. A filesystem without exclusive creation gets fsspec's check-then-write, where
    a short race remains."""
    content = uuid.uuid4().hex.encode() if content is None else content
    if is_local(fs):
        return write_new(path, content)
    try:
        fs.pipe_file(path, content, mode="create")
        return True
    except FileExistsError:
        return False


@contextmanager
def registry_lock(fs: fsspec.AbstractFileSystem, root: str) -> Iterator[None]:
    """Hold the registry's lock (REGISTRY/.lock, flock) while moving an alias. Object stores
    have no lock: writers there rely on exclusive creation (create_exclusively) instead."""
    if not is_local(fs):
        yield
        return
    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
