"""One batch prediction at a time per output: a run owns its output and work folder from the
start to the end, and a second run on the same output refuses in one line naming the holder.

    lock = take_output_lock("out/scans.parquet")        # PredictError naming the holder if taken
    ...                                                  # the work folder is ours
    lock.check()                                         # before the output appears: still ours?
    lock.release()

On a local disk (`FileLock`) the lock is an flock on `<output>.lock`, held as long as the run's
process lives. The kernel lets go of it when that process dies, however it dies (SIGKILL, the OOM
killer), so a lock is never stale: the next run takes it over, and with --resume continues the
dead run's work. The file records the holder's pid, host and start time, for the message a second
run refuses with (issue 12: a second run deleted the first one's live work folder). A finished run
removes the file.

On an object store (`LeaseLock`) there is no kernel to notice a death, and the run's work may
be picked up from another machine: the lock is a lease. Its objects are generations
`<output>.lock/00000001.json`, `00000002.json`...; the holder is whoever created the newest
generation, exclusively (store.create_exclusively: a conditional PUT on S3, so of two runs
racing for a generation exactly one gets it). The holder renews its generation every
LEASE_SECONDS / 4 (a thread rewrites `renewed`). A lease not renewed for LEASE_SECONDS belongs
to a run that is gone, and the next run takes it over by creating the next generation; so does
a run on the same host as a holder whose process no longer exists, at once. A holder that finds
a newer generation than its own has lost its lease (it was stalled, or cut off from the store,
for longer than the lease) and stops before its output appears (`check`). This assumes the
machines' clocks agree to within a few seconds, and a holder stalled for longer than the lease
between its last check and its output's commit can still race the new holder; both write the
same rows, each complete, so the output is one run's or the other's, never a mix.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Protocol

import fsspec

from flows.predict.sources import PredictError
from flows.registry.store import (
    create_exclusively,
    display,
    is_local,
    open_location,
    write_whole,
)
from netcore.io import writing

LEASE_SECONDS = 60.0  # an object-store lock not renewed for this long belongs to a run that is gone


class OutputLock(Protocol):
    def check(self) -> None:
        """Raise PredictError if the lock is no longer this run's."""

    def release(self) -> None:
        """Let go of the output (the next run finds no lock)."""


def take_output_lock(output: str) -> OutputLock:
    """Lock `output` for this run, or raise PredictError saying who holds it."""
    fs, path = open_location(output)
    if is_local(fs):
        return FileLock.take(Path(path), output)
    return LeaseLock.take(fs, path, output)


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}


def _in_use(output: str, holder: str, where: str) -> PredictError:
    return PredictError(
        f"{output}: in use by another digitflow predict ({holder}); wait for it to end or stop "
        f"it (it holds {where})"
    )


def _describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
    return f"pid {holder['pid']} on {holder['host']}, since {since}"


class FileLock:
    def __init__(self, path: Path, descriptor: int):
        self.path = path
        self.descriptor = descriptor

    @classmethod
    def take(cls, output: Path, shown: str) -> FileLock:
        path = output.with_name(output.name + ".lock")
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(descriptor)
                os.close(descriptor)
                raise _in_use(shown, holder, str(path)) from None
            # The file we locked may have been removed by a run that just finished (it unlinks
            # then unlocks): then it locks nothing, and the name is tried again.
            if _same_file(descriptor, path):
                break
            os.close(descriptor)
        with writing(path):
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, json.dumps(_me()).encode(), 0)
        return cls(path, descriptor)

    def check(self) -> None:
        """An flock is held until released or the process dies: nothing to check."""

    def release(self) -> None:
        """Remove the lock file and let go (the next run finds no lock)."""
        self.path.unlink(missing_ok=True)
        os.close(self.descriptor)


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _holder(descriptor: int) -> str:
    """Who holds the lock, as its file says (it may not have written it yet)."""
    try:
        return _describe(json.loads(os.pread(descriptor, 4096, 0)))
    except (ValueError, KeyError, TypeError):
        return "a run that is starting"


class LeaseLock:
    def __init__(self, fs: fsspec.AbstractFileSystem, folder: str, generation: int, me: dict):
        self.fs = fs
        self.folder = folder
        self.generation = generation
        self.me = me
        self.lost: str | None = None  # why the lease is no longer ours
        self.stopped = threading.Event()
        self.renewer = threading.Thread(target=self._renew, name="digitflow-lease", daemon=True)

    @classmethod
    def take(
        cls,
        fs: fsspec.AbstractFileSystem,
        output: str,
        shown: str,
        lease_seconds: float = LEASE_SECONDS,
    ) -> LeaseLock:
        folder = f"{output}.lock"
        newest, holder = _newest_generation(fs, folder)
        if newest and (holder is None or not _gone(holder, lease_seconds)):
            raise _in_use(shown, _lease_holder(holder, lease_seconds), display(fs, folder))
        me = _me() | {"renewed": time.time(), "lease_seconds": lease_seconds}
        if not create_exclusively(fs, _generation(folder, newest + 1), json.dumps(me).encode()):
            _, winner = _newest_generation(fs, folder)
            raise _in_use(shown, _lease_holder(winner, lease_seconds), display(fs, folder))
        lock = cls(fs, folder, newest + 1, me)
        lock.renewer.start()
        return lock

    def _renew(self) -> None:
        interval = self.me["lease_seconds"] / 4
        while not self.stopped.wait(interval):
            newest, holder = _newest_generation(self.fs, self.folder)
            if newest != self.generation:
                self.lost = f"taken over by {_describe(holder) if holder else 'another run'}"
                return
            self.me["renewed"] = time.time()
            try:
                write_whole(self.fs, _generation(self.folder, self.generation), _json(self.me))
            except OSError:
                continue  # the store is out of reach for now: the next round tries again

    def check(self) -> None:
        newest, holder = _newest_generation(self.fs, self.folder)
        if self.lost is None and newest != self.generation:
            self.lost = f"taken over by {_describe(holder) if holder else 'another run'}"
        if self.lost is not None:
            raise PredictError(
                f"{display(self.fs, self.folder)}: this run lost its lease on the output "
                f"({self.lost}); the other run finishes the work"
            )

    def release(self) -> None:
        """Stop renewing and remove the lease's generations, unless a newer run took it over."""
        self.stopped.set()
        newest, _ = _newest_generation(self.fs, self.folder)
        if newest == self.generation:
            self.fs.rm([_generation(self.folder, n) for n in _generations(self.fs, self.folder)])


def _json(document: dict) -> bytes:
    return json.dumps(document).encode()


def _generation(folder: str, number: int) -> str:
    return f"{folder}/{number:08d}.json"


def _generations(fs: fsspec.AbstractFileSystem, folder: str) -> list[int]:
    fs.invalidate_cache(folder)  # s3fs caches listings: a lock must see the store as it is now
    try:
        names = fs.ls(folder, detail=False)
    except FileNotFoundError:
        return []
    stems = (name.rsplit("/", 1)[-1].removesuffix(".json") for name in names)
    return sorted(int(stem) for stem in stems if stem.isdigit())


def _newest_generation(fs: fsspec.AbstractFileSystem, folder: str) -> tuple[int, dict | None]:
    """The newest generation's number (0: none) and what its holder wrote (None: unreadable,
    or none)."""
    numbers = _generations(fs, folder)
    if not numbers:
        return 0, None
    try:
        return numbers[-1], json.loads(fs.cat_file(_generation(folder, numbers[-1])))
    except (OSError, ValueError):
        return numbers[-1], None


def _gone(holder: dict, lease_seconds: float) -> bool:
    """Whether the holder's run has ended: its lease ran out, or it ran on this host and its
    process is not there any more."""
    if time.time() - holder.get("renewed", 0) > holder.get("lease_seconds", lease_seconds):
        return True
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError):
            return False
    return False


def _lease_holder(holder: dict | None, lease_seconds: float) -> str:
    if holder is None:
        return "a run that is starting"
    expires = holder.get("renewed", 0) + holder.get("lease_seconds", lease_seconds)
    at = time.strftime("%H:%M:%S", time.localtime(expires))
    return f"{_describe(holder)}; its lease runs out at {at} if that run has gone"
