"""The embedded Prefect server's process: how it is launched, and what it runs.

    process, port = launch()        # python -m flows.runtime.embedded_server PORT, on 127.0.0.1
    launch_early()                   # the same, as the console script's first act (entry.py)
    taken = take_early()             # (process, port) launched early, or None

It is the server Prefect's own ephemeral mode runs (the same app factory, ephemeral and final, no
UI, uvicorn on 127.0.0.1 with its lifespan, errors only), with three differences. Automations are
off (their triggers and actions services: PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED=false unless
set): nothing a command runs defines any, and their start-up was much of the server's lifespan
(the actions service builds the whole app again to make itself a client). And it starts with the
garbage collector off. Its start-up is Python importing and building hundreds of thousands of
objects (pydantic models, SQLAlchemy tables, FastAPI routes), and the collector walks them again
and again while none of them is garbage yet: off, the start-up takes markedly less time,
and it is the longest wait of a small `digitflow predict` (docs/benchmarks.md, "Small jobs").
What exists once it serves is frozen (gc.freeze: left out of later collections; it lives as
long as the server anyway) and the collector is turned on again. And its SQLite database, when
it is at the revision this Prefect version migrated it to before (remembered beside it, in
prefect.db.digitflow-schema.json), is served without an Alembic run.

This module imports only the standard library until the server process runs `main`: the console
script launches the server before it imports anything else (flows/cli/entry.py). The rest of
what a command does with the server (waiting for it, using it, stopping it) is
flows/runtime/server.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    from prefect.settings import get_current_settings, temporary_settings

    app = create_app()  # ephemeral, final, no UI: from the environment launch() gave it
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on")
    )
    started = server.startup
    database = _sqlite_database(get_current_settings())
    current = database is not None and _schema_is_current(database)

    async def startup(*args: object, **kwargs: object) -> None:
        await started(*args, **kwargs)  # the lifespan (database, services), then the socket
        gc.freeze()
        gc.enable()
        if database is not None and not current:
            _remember_schema(database)

    server.startup = startup  # type: ignore[method-assign]
    # A database this Prefect has migrated already needs no migration run: Alembic would load its
    # scripts only to find nothing to do (docs/benchmarks.md, "Small jobs").
    with temporary_settings(updates={"server.database.migrate_on_start": False} if current else {}):
        server.run()


# Which schema revision each Prefect version migrates its database to, learnt from the database
# after a start that ran the migrations; beside the database.
SCHEMA_SUFFIX = ".digitflow-schema.json"


def _sqlite_database(settings: Any) -> Path | None:
    """The SQLite file of Prefect's database (the default), or None for any other database, or
    when migrations are turned off anyway."""
    url = settings.server.database.connection_url
    url = url.get_secret_value() if hasattr(url, "get_secret_value") else url
    if not settings.server.database.migrate_on_start or not url:
        return None
    scheme, _, path = str(url).partition(":///")
    return Path(path) if scheme.startswith("sqlite") and path != ":memory:" else None


def _revision(database: Path) -> str | None:
    """The database's Alembic revision, None when it has none (a new or foreign file)."""
    import sqlite3

    if not database.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return None
    return rows[0][0] if len(rows) == 1 else None


def _schema_is_current(database: Path) -> bool:
    """Whether `database` is at the revision this Prefect version migrated it to before."""
    import prefect

    try:
        known = json.loads(Path(f"{database}{SCHEMA_SUFFIX}").read_text())
    except (OSError, ValueError):
        return False
    revision = _revision(database)
    return (
        isinstance(known, dict)
        and revision is not None
        and known.get(prefect.__version__) == revision
    )


def _remember_schema(database: Path) -> None:
    """Record the revision the migrations just brought `database` to, for this Prefect version."""
    import prefect

    from netcore.io import write_atomic

    revision = _revision(database)
    if revision is None:
        return
    text = json.dumps({prefect.__version__: revision})
    with contextlib.suppress(OSError):  # only a head start for the next command
        write_atomic(f"{database}{SCHEMA_SUFFIX}", lambda path: path.write_text(text))


if __name__ == "__main__":
    main(int(sys.argv[1]))
