"""Whether the Prefect API answers while a command's flow runs, and what happens when it stops.

A flow's work never needs the API: task runs report through Prefect's event queue, and every file
is ours. But Prefect's client retries each call it makes after the API is gone (about a minute a
call), and its event and log workers retry every queued item at exit: a 300,000-file prediction
wrote its complete output 4 s after its server was SIGKILLed, then hung for 17.7 minutes and
exited 1 (issue 12). So the CLI watches the API itself (flows/cli/runner.py):

    with ApiWatch.watching(url, on_loss=...) as watch:   # a thread asks url/health every second
        flow(...)                  # the flows call stop_if_lost(...) where stopping is safe
    watch.lost_at                  # None, or when the API stopped answering

The API is lost when nothing has listened at its address for REFUSED_SECONDS (a killed server),
or nothing has answered for SILENT_SECONDS (a hung one: a busy server answers late, not never).
Then `on_loss` runs (the CLI has Prefect's client stop retrying), `stop_if_lost(kept)` raises
ApiLost in the flow (batch prediction between shards, training after an epoch's checkpoint), and
`artifact(...)` skips the run's artifacts. If the command has not ended DEADLINE_SECONDS later,
the watch ends the process itself, with one line: losing the API never hangs a command.

No Prefect here: the flows' plain modules (flows/training/train.py) call stop_if_lost too.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from netcore.errors import NetcoreError

PROBE_SECONDS = 1.0  # between two questions to the API
PROBE_TIMEOUT = 2.0  # for one answer
REFUSED_SECONDS = 3.0  # nothing listening for this long: the server is gone
SILENT_SECONDS = 20.0  # no answer for this long: the server is hung
DEADLINE_SECONDS = 20.0  # after the loss, for the command to end by itself
EXIT_ERROR = 1


class ApiLost(NetcoreError):
    """The Prefect API stopped answering while a flow ran; the message says what is kept."""


_current: dict[str, ApiWatch | None] = {"watch": None}


class ApiWatch:
    def __init__(self, url: str, on_loss: Callable[[], None] | None = None):
        self.health = f"{url.rstrip('/')}/health"
        self.url = url
        self.on_loss = on_loss
        self.lost_at: float | None = None
        self.lost = threading.Event()
        self.decided = threading.Condition()
        self.finished = threading.Event()
        self.last_answer = time.monotonic()
        self.last_listener = time.monotonic()

    @classmethod
    @contextmanager
    def watching(
        cls, url: str | None, on_loss: Callable[[], None] | None = None
    ) -> Iterator[ApiWatch]:
        """Watch `url` for the block (None: nothing to watch, never lost); stop_if_lost and
        artifact use this watch meanwhile."""
        watch = cls(url or "", on_loss)
        if url:
            threading.Thread(target=watch._run, name="digitflow-api-watch", daemon=True).start()
            _current["watch"] = watch
        try:
            yield watch
        finally:
            watch.finished.set()
            _current["watch"] = None

    def _run(self) -> None:
        while not self.finished.wait(PROBE_SECONDS):
            answered, listening = self._probe()
            now = time.monotonic()
            with self.decided:
                if answered:
                    self.last_answer = self.last_listener = now
                elif listening:
                    self.last_listener = now
                gone = now - self.last_listener >= REFUSED_SECONDS
                if gone or now - self.last_answer >= SILENT_SECONDS:
                    self._declare_lost()
                    return
                self.decided.notify_all()

    def _probe(self) -> tuple[bool, bool]:
        """(whether the API answered, whether anything listens at its address at all)."""
        try:
            with urllib.request.urlopen(self.health, timeout=PROBE_TIMEOUT):
                return True, True
        except urllib.error.HTTPError:
            return True, True  # an answer, if not a happy one (a proxy, an auth wall)
        except urllib.error.URLError as error:
            refused = isinstance(error.reason, ConnectionRefusedError)
            return False, not refused
        except OSError:  # a timeout, a reset: something is there but does not answer
            return False, True

    def _declare_lost(self) -> None:
        self.lost_at = time.time()
        if self.on_loss is not None:  # first: by the time the flows see the loss, it is done
            self.on_loss()
        self.lost.set()
        self.decided.notify_all()
        threading.Thread(target=self._end_if_still_running, daemon=True).start()

    def _end_if_still_running(self) -> None:
        """The last resort: something waits on the API in a way nothing else bounds."""
        if self.finished.wait(DEADLINE_SECONDS):
            return
        sys.stdout.flush()
        sys.stderr.write(
            f"digitflow: error: {self.loss()}, and the command did not end within "
            f"{DEADLINE_SECONDS:.0f} s; stopped it (finished work is kept: run it again)\n"
        )
        sys.stderr.flush()
        os._exit(EXIT_ERROR)

    def is_lost(self) -> bool:
        return self.lost.is_set()

    def loss(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.lost_at))
        return f"the Prefect API at {self.url} stopped answering at {when}"

    def verdict(self, timeout: float) -> bool:
        """Whether the API is lost, waiting up to `timeout` for the watch to decide (after a
        call to the API failed, say): lost, or a new answer since the call."""
        asked = time.monotonic()
        with self.decided:
            self.decided.wait_for(
                lambda: self.lost.is_set() or self.last_answer > asked, timeout=timeout
            )
        return self.lost.is_set()


def stop_if_lost(kept: str) -> None:
    """Raise ApiLost, saying what is `kept` for the next run, if the watched API is lost (a
    no-op when nothing watches: a flow run from Python or by `digitflow serve`)."""
    watch = _current["watch"]
    if watch is not None and watch.is_lost():
        raise ApiLost(f"{watch.loss()}; stopped: {kept}")


def artifact(create: Callable[..., Any], **fields: Any) -> None:
    """`create(**fields)` (a Prefect create_*_artifact), unless the watched API is lost: an
    artifact is the run's record, not its work, and losing it must not fail a finished job (the
    CLI says the record is incomplete). Any other failure is raised as it is."""
    watch = _current["watch"]
    if watch is not None and watch.is_lost():
        return
    try:
        create(**fields)
    except Exception:
        if watch is None or not watch.verdict(SILENT_SECONDS):
            raise
