"""The embedded Prefect server's process: how it is launched, and what it runs.

    process, port = launch()        # python -m flows.runtime.embedded_server PORT, on 127.0.0.1
    launch_early()                   # the same, as the console script's first act (entry.py)
    taken = take_early()             # (process, port) launched early, or None

It is the server Prefect's own ephemeral mode runs (the same app factory, ephemeral and final, no
UI, uvicorn on 127.0.0.1 with its lifespan, errors only), with two differences. Automations are
off (their triggers and actions services: PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED=false unless
set): nothing a command runs defines any, and their start-up was a third of the server's lifespan
(the actions service builds the whole app again to make itself a client). And it starts with the
garbage collector off. Its start-up is Python importing and building hundreds of thousands of
objects (pydantic models, SQLAlchemy tables, FastAPI routes), and the collector walks them again
and again while none of them is garbage yet: off, the start-up takes about a third less time,
and it is the longest wait of a small `digitflow predict` (docs/benchmarks.md, "Small jobs").
What exists once it serves is frozen (gc.freeze: left out of later collections; it lives as
long as the server anyway) and the collector is turned on again.

This module imports only the standard library until the server process runs `main`: the console
script launches the server before it imports anything else (flows/cli/entry.py). The rest of
what a command does with the server (waiting for it, using it, stopping it) is
flows/runtime/server.py.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # linux/prctl.h

_early: dict[str, tuple[subprocess.Popen, int] | None] = {"launched": None}


def wanted() -> bool:
    """Whether a command that runs a flow needs the embedded server: PREFECT_API_URL is not set
    and embedded servers are not turned off. (An API set in the active Prefect profile is found
    only once Prefect is imported: flows/runtime/server.use_api then stops the server unused.)"""
    if os.environ.get("PREFECT_API_URL"):
        return False
    return os.environ.get("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "").lower() not in ("0", "false")


def launch() -> tuple[subprocess.Popen, int]:
    """Start the server process on a free port of 127.0.0.1, without waiting for it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.runtime.embedded_server", str(port)],
        env={
            "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_stop_with_parent(),
        # Its own session: Ctrl-C in the terminal interrupts the flow, not the server that the
        # interrupted flow still reports its end to (use_api stops it afterwards).
        start_new_session=True,
    )
    return process, port


def launch_early() -> None:
    """Launch the server now, for the command to take over (take_early) once it needs it."""
    if wanted():
        _early["launched"] = launch()


def take_early() -> tuple[subprocess.Popen, int] | None:
    """The server launch_early launched, if any (and not taken yet)."""
    launched, _early["launched"] = _early["launched"], None
    return launched


def _stop_with_parent() -> Callable[[], None] | None:
    """On Linux, a function for Popen's preexec_fn that has the kernel send the server SIGTERM
    when this process dies, even by SIGKILL: nothing else could stop it then, and it would run
    on for good, holding its port and database (tests/reliability/test_orphans.py). The kernel
    ties the signal to the thread that starts the server: the CLI's main thread, so the process.
    (A command that never takes an early server over lets it go this way too.)"""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def main(port: int) -> None:
    """The server process: Prefect's ephemeral app, served until SIGTERM."""
    gc.disable()
    import uvicorn
    from prefect.server.api.server import create_app

    app = create_app()  # ephemeral, final, no UI: from the environment launch() gave it
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on")
    )
    started = server.startup

    async def startup(*args: object, **kwargs: object) -> None:
        await started(*args, **kwargs)  # the lifespan (database, services), then the socket
        gc.freeze()
        gc.enable()

    server.startup = startup  # type: ignore[method-assign]
    server.run()


if __name__ == "__main__":
    main(int(sys.argv[1]))
