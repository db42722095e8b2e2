"""Where registries and batch prediction's files live: any fsspec location (a local folder,
s3://, memory://...), reached the same way by every module that reads or writes one.

    fs, root = open_location("s3://bucket/models")   # the filesystem and the path on it
    shown = display(fs, f"{root}/v3")                # "s3://bucket/models/v3", or a local path
    digest = sha256_on(fs, f"{root}/v3/config.json")
    if create_exclusively(fs, f"{root}/v4/.claim"): ...   # True for exactly one caller
    write_whole(fs, f"{root}/latest", b"v4\\n")            # complete or not at all
    with writing_stream(fs, "bucket/out/big.parquet") as stream: ...   # the same, streamed
    with registry_lock(fs, root): ...                      # one writer at a time (local disks)
    with storage_errors("s3://bucket/in"): fs.ls(...)      # failures as one line (StorageError)

Object stores are reached with their own client's configuration: for S3 (s3fs, botocore), the
standard AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION, AWS_PROFILE...), so any S3-compatible store works.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from netcore.errors import NetcoreError
from netcore.io import atomic_path, sha256_file, sha256_stream, write_atomic, write_new


class RegistryError(NetcoreError):
    """A registry or version is missing, incomplete, or fails its checksums."""


class StorageError(NetcoreError):
    """An object store could not be reached or refused a request (one line for the user)."""


def open_location(location: str | Path) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem of `location` and its path there, without a trailing slash."""
    with storage_errors(location):
        fs, root = fsspec.core.url_to_fs(str(location))
    return fs, root.rstrip("/") or "/"


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def is_url(location: str | Path) -> bool:
    """Whether `location` names something other than a local path (s3://..., memory://...)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


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


def write_whole(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write a small file whole: readers see the old content or the new, never a part. On a
    local disk through netcore.io.write_atomic (fsync and rename); on an object store one PUT,
    which is atomic by itself."""
    if is_local(fs):
        write_atomic(path, lambda temporary: temporary.write_bytes(data))
    else:
        fs.pipe_file(path, data)


@contextmanager
def writing_stream(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[BinaryIO]:
    """A binary stream to write `path` with; on a clean exit the file appears complete, at
    once, and on an error nothing appears. On a local disk a temporary file beside it, synced
    and renamed (netcore.io.atomic_path); on an object store the stream's upload, which S3
    completes only when the stream is closed (a small file is one PUT then, a large one a
    multipart upload whose parts stay invisible until it is completed), and aborts on an error."""
    if is_local(fs):
        with atomic_path(path) as temporary, open(temporary, "wb") as stream:
            yield stream
        return
    stream = fs.open(path, "wb")
    try:
        yield stream
    except BaseException:
        stream.discard()  # an unfinished multipart upload is aborted
        stream.closed = True  # nor may closing it (or the garbage collector) upload the rest
        raise
    stream.close()


@contextmanager
def storage_errors(location: str | Path) -> Iterator[None]:
    """Within the block, an object store's failure (unreachable endpoint, missing bucket,
    refused credentials) for `location` becomes a StorageError saying so in one line. Local
    paths pass through untouched: their errors (a full disk, say) are handled where they occur."""
    try:
        yield
    except NetcoreError:
        raise
    except Exception as error:
        if not is_url(location):
            raise
        reason = _storage_problem(error)
        if reason is None:
            raise
        raise StorageError(f"{location}: {reason}") from None


def _storage_problem(error: Exception) -> str | None:
    """What an object store's failure means for the user, or None for any other error. s3fs
    turns S3's answers into OSErrors (PermissionError, FileNotFoundError...); botocore raises
    its own errors for what never got an answer (no connection, no credentials)."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the default AWS endpoint"
    kind = type(error).__name__
    if type(error).__module__.startswith("botocore"):
        if "Credentials" in kind:
            return (
                f"no credentials for the object store ({message}); set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
        if "Connect" in kind or "Endpoint" in kind or "Timeout" in kind:
            return (
                f"cannot reach the object store at {endpoint} ({message}); check "
                "AWS_ENDPOINT_URL and the network"
            )
        return f"the object store at {endpoint} failed ({kind}: {message})"
    if isinstance(error, PermissionError):
        return (
            f"access denied by the object store at {endpoint} ({message}); check the "
            "credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and what "
            "they may do"
        )
    if isinstance(error, FileNotFoundError) and "bucket" in message.lower():
        return f"no such bucket at {endpoint} ({message})"
    if isinstance(error, OSError):
        return f"the object store at {endpoint} refused it ({kind}: {message})"
    return None


def check_bucket(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """On S3, ask for the bucket `path` is in (one HEAD request): a missing bucket, refused
    credentials or an unreachable endpoint then fail here, in words storage_errors turns into
    one line, instead of reading as an empty folder."""
    if "s3" not in fs.protocol:
        return
    bucket = path.strip("/").split("/")[0]
    try:
        fs.info(bucket)
    except FileNotFoundError:
        raise FileNotFoundError(f"no bucket named {bucket!r}") from None


def remove_tree(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Delete a folder (on an object store: every object under the prefix), if it exists."""
    with suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


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
