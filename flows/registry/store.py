"""Where a registry lives: any fsspec location (a local folder, s3://, memory://...), reached the
same way by every registry module.

    fs, root = open_registry("s3://bucket/models")   # the filesystem and the path on it
    shown = display(fs, f"{root}/v3")                # "s3://bucket/models/v3", or a local path
    digest = sha256_on(fs, f"{root}/v3/config.json")
    if create_exclusively(fs, f"{root}/v4/.claim"): ...   # True for exactly one caller
"""

from __future__ import annotations

import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem

from netcore.errors import NetcoreError
from netcore.io import sha256_file, sha256_stream


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


def create_exclusively(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Create `path` unless it exists; False when it did."""
    token = uuid.uuid4().hex.encode()
    try:
        with fs.open(path, "xb") as f:
            f.write(token)
        return True
    except FileExistsError:
        return False
    except (NotImplementedError, ValueError):
        # A filesystem without exclusive creation: check, then write (a short race remains).
        if fs.exists(path):
            return False
        fs.pipe_file(path, token)
        return True
