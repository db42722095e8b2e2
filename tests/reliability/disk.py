"""Running out of room, for real: a small file system that fills up, or a file-size limit.

    disk = SmallDisk.mount(tmp_path / "disk")   # a tmpfs of its own (None: mounting not allowed)
    disk.leave(300_000)                          # only this many bytes still fit on it
    ...                                          # a write there fails with ENOSPC
    disk.free()                                  # the filler is gone: room again
    disk.unmount()

    digitflow(..., preexec_fn=file_size_limit(64_000))   # EFBIG past 64 KB, in that child only
    with files_limited_to(64_000): ...                     # the same here, for the block

Mounting a tmpfs needs root with CAP_SYS_ADMIN (the machine and CI here have both); elsewhere, or
with RELIABILITY_NO_TMPFS=1, the tests that need a full file system skip, and those that can use a
file-size limit instead (RLIMIT_FSIZE, which fails a write that would make a file larger with
EFBIG) use it.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

SIZE = 64 << 20  # the tmpfs: more than any test writes there once its filler is gone
FILLER = ".filler"


class SmallDisk:
    def __init__(self, folder: Path):
        self.folder = folder

    @classmethod
    def mount(cls, folder: Path) -> SmallDisk | None:
        """A tmpfs of SIZE bytes at `folder` (created), or None where mounting is not allowed
        (or RELIABILITY_NO_TMPFS=1 asks to run as if it were not)."""
        folder.mkdir(parents=True, exist_ok=True)
        if os.environ.get("RELIABILITY_NO_TMPFS") == "1":
            return None
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(folder)],
            capture_output=True,
        )
        return cls(folder) if done.returncode == 0 else None

    def leave(self, room: int) -> None:
        """Fill the file system until only `room` bytes (rounded to pages) fit."""
        self.free()
        filler = self.folder / FILLER
        stats = os.statvfs(self.folder)
        with open(filler, "wb") as stream:
            stream.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - room))

    def room(self) -> int:
        stats = os.statvfs(self.folder)
        return stats.f_bavail * stats.f_frsize

    def free(self) -> None:
        (self.folder / FILLER).unlink(missing_ok=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "--lazy", str(self.folder)], check=True)


@contextmanager
def files_limited_to(limit: int) -> Iterator[None]:
    """The same in this process, for the block: its soft limit, restored afterwards."""
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def file_size_limit(limit: int) -> Callable[[], None]:
    """For Popen's preexec_fn: writes that would make a file larger than `limit` bytes fail with
    EFBIG in the child (SIGXFSZ, which would kill it instead, ignored), as a full disk would."""

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limit_file_size
