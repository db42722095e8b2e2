"""Prefect's embedded (ephemeral) API server, started before Prefect is even imported.

Without PREFECT_API_URL, Prefect starts a temporary local server the first time a flow needs
one: it imports the whole server package into the calling process and then waits for a second
Python process to import it again and answer, seconds each (docs/benchmarks.md, "Numbers behind
the code"). Doing the same thing ourselves, at the very start of the command, overlaps the
server's start-up with our own imports and saves the first import altogether:

    server = EmbeddedServer.start_unless_configured()   # before `import prefect`
    ...                                                   # imports, configuration
    with use_api(server):                                 # after `import prefect`
        flow(...)

The server is the one Prefect would start (same app factory, same flags, a SQLite database
under PREFECT_HOME; its process is flows/runtime/embedded_server.py), and it is stopped when
the block ends. The console script launches it as its very first act when the command will run
a flow (flows/cli/entry.py); start_unless_configured then takes that one over. When a Prefect API is
configured (PREFECT_API_URL in the environment or in the active Prefect profile), that server is
used instead and the embedded one is never started, or stopped unused.

`prefect_api_url()` and `server_problem(url)` tell which server is configured and whether it
answers (`digitflow serve` and its `--check`, the Docker image's health check).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from flows.runtime.embedded_server import launch, take_early, wanted
from netcore.errors import NetcoreError

STARTUP_TIMEOUT_SECONDS = 120.0
HEALTH_TIMEOUT_SECONDS = 5.0


class PrefectServerError(NetcoreError):
    """The embedded Prefect server did not start."""


class EmbeddedServer:
    """The embedded server's process (flows/runtime/embedded_server.py) and its API URL."""

    def __init__(self, process: subprocess.Popen, port: int) -> None:
        self.process = process
        self.port = port
        self.api_url = f"http://127.0.0.1:{port}/api"

    @classmethod
    def start_unless_configured(cls) -> EmbeddedServer | None:
        """Start one now, or take over the one the console script launched as its first act,
        unless PREFECT_API_URL is set or embedded servers are turned off."""
        launched = take_early()
        if launched is None and wanted():
            launched = launch()
        return cls(*launched) if launched else None

    def wait_until_ready(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                last = (error.strip().splitlines() or ["no output"])[-1]
                raise PrefectServerError(
                    f"the embedded Prefect server exited with status {self.process.returncode} "
                    f"({last})"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.02)
        raise PrefectServerError(
            f"the embedded Prefect server did not answer within {timeout:.0f} s"
        )

    def stop(self) -> None:
        """Ask the server to stop (SIGTERM), without waiting for it: its shutdown, flushing what
        its services hold to its database, goes on for a fraction of a second (uvicorn's
        shutdown alone sleeps 0.2 s), and a command's result does not need it. A daemon thread
        reaps it should this process live on (a process that ends first hands it to init)."""
        if self.process.poll() is None:
            self.process.terminate()
            threading.Thread(
                target=self.process.wait, name="reap-prefect-server", daemon=True
            ).start()


@contextmanager
def use_api(server: EmbeddedServer | None) -> Iterator[str | None]:
    """Within the block, flows talk to the configured Prefect API if there is one, else to
    `server` (waited for here); yields the API URL in use (None: Prefect decides)."""
    from prefect.settings import (
        PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
        PREFECT_API_URL,
        get_current_settings,
        temporary_settings,
    )

    configured = get_current_settings().api.url
    if server is None or configured:
        if server is not None:
            server.stop()
        yield configured
        return
    try:
        server.wait_until_ready()
        # The embedded server speaks plain HTTP on 127.0.0.1: there is no certificate to check.
        # Saying so spares each Prefect API client's SSL context certifi's CA bundle (it still
        # loads the system's default paths), a third of their CPU cost (docs/benchmarks.md).
        # And it is this Prefect's own server: no client needs to ask for its version first.
        settings = {
            PREFECT_API_URL: server.api_url,
            PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True,
            "client.server_version_check_enabled": False,
        }
        with temporary_settings(updates=settings):
            _start_prefect_workers()
            try:
                yield server.api_url
            finally:
                _drain_prefect_workers()
    finally:
        server.stop()


def _start_prefect_workers() -> None:
    """Start Prefect's events and API-log workers as part of start-up. Left to themselves they
    start on the first event and the first log line, at the flow's start, and each builds its
    API clients there (their SSL contexts cost tens of milliseconds of CPU each,
    docs/benchmarks.md) while the flow lists and scores its first files."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    EventsWorker.instance()
    APILogWorker.instance()


def _drain_prefect_workers(timeout: float = 10.0) -> None:
    """Send the logs and events still queued for the API before the server goes away (as
    Prefect's own test harness does), so nothing is lost and nothing retries at exit; nothing
    to send if the server is gone already (flows/runtime/api_watch.py)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    if _abandoned["done"]:
        return
    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)


_abandoned = {"done": False}


def abandon_deliveries() -> None:
    """The API is gone: drop what Prefect's event and log workers still hold for it. At exit
    Prefect waits for them to deliver every queued item, each retried for seconds against a
    server that is not there (17.7 minutes after a 300,000-file prediction, issue 12).

    Prefect has no public way to do this: its services are reset as they are in a forked child
    (stopped, queue dropped, nothing for the exit hook to wait for). tests/reliability/
    test_api_loss.py fails if a Prefect upgrade changes that."""
    from prefect._internal.concurrency.services import _active_services

    for service in list(_active_services):
        service.reset_for_fork()
    _abandoned["done"] = True


def prefect_api_url() -> str | None:
    """The Prefect API digitflow talks to: PREFECT_API_URL or the active Prefect profile."""
    if url := os.environ.get("PREFECT_API_URL"):
        return url  # without importing Prefect: keeps `--check`, the health check, quick
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def server_problem(url: str | None, timeout: float = HEALTH_TIMEOUT_SECONDS) -> str | None:
    """Why the Prefect server at `url` cannot schedule runs, or None when it answers."""
    if not url:
        return "PREFECT_API_URL is not set (Prefect's embedded server cannot schedule)"
    request = urllib.request.Request(f"{url.rstrip('/')}/health")
    if key := os.environ.get("PREFECT_API_KEY"):
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError as error:
        return f"the Prefect server at {url} answers {error.code} {error.reason}"
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return f"no Prefect server answers at {url} ({reason})"
