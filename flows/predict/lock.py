"""One batch prediction at a time per output: `<output>.lock`, locked while a run owns the output
and its work folder.

    lock = OutputLock.take(Path("out/scans.parquet"))   # PredictError naming the holder if taken
    ...                                                  # the work folder is ours
    lock.release()

The lock is an flock on the file, held as long as the run's process lives. The kernel lets go of
it when that process dies, however it dies (SIGKILL, the OOM killer), so a lock is never stale:
the next run takes it over, and with --resume continues the dead run's work. The file records the
holder's pid, host and start time, for the message a second run refuses with (issue 12: a second
run deleted the first one's live work folder). A finished run removes the file.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from flows.predict.sources import PredictError
from netcore.io import writing


class OutputLock:
    def __init__(self, path: Path, descriptor: int):
        self.path = path
        self.descriptor = descriptor

    @classmethod
    def take(cls, output: Path) -> OutputLock:
        """Lock `output` for this process, or raise PredictError saying who holds it."""
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
                raise PredictError(
                    f"{output}: in use by another digitflow predict ({holder}); wait for it to "
                    f"end or stop it (it holds {path})"
                ) from None
            # The file we locked may have been removed by a run that just finished (it unlinks
            # then unlocks): then it locks nothing, and the name is tried again.
            if _same_file(descriptor, path):
                break
            os.close(descriptor)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        with writing(path):
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, json.dumps(me).encode(), 0)
        return cls(path, descriptor)

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
        holder = json.loads(os.pread(descriptor, 4096, 0))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
        return f"pid {holder['pid']} on {holder['host']}, since {since}"
    except (ValueError, KeyError, TypeError):
        return "a run that is starting"
