"""What every command that runs a flow does, in one place (`digitflow train`, `digitflow
predict`): Prefect's settings; the embedded Prefect server (unless one is configured) booting
while the command imports its flow; a quiet console with digitflow's stage lines; the run, whose
Prefect failures become one-line errors too.

    result, timings = run_flow_command(verbose, lambda: (my_flow, {"x": 1}))

Prefect reads its settings once, at import, so a command imports its flow module only inside
`load`, which runs after configure_prefect.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from flows.runtime.server import EmbeddedServer, use_api
from flows.runtime.settings import configure_prefect, quiet_console
from netcore.errors import NetcoreError


def run_flow_command(
    verbose: bool,
    load: Callable[[], tuple[Any, dict[str, Any]]],
    preload: Callable[[], None] | None = None,
) -> tuple[Any, dict[str, float]]:
    """What a command that runs a flow does: Prefect's settings; the embedded Prefect server
    (unless one is configured) booting while `load()` imports the flow and returns it with its
    parameters, and `preload()` imports what the flow needs later (only while a server boots:
    then the time is free); a quiet console with digitflow's stage lines; the run, whose Prefect
    failures (an unreachable API, a server that did not start) become one-line errors too.

    Returns the flow's result and {"startup_seconds", "flow_seconds"}, counted from the call."""
    configure_prefect(verbose)
    started = time.perf_counter()
    server = EmbeddedServer.start_unless_configured()
    try:
        flow, parameters = load()  # imports Prefect: after configure_prefect
        if server is not None and preload is not None:
            preload()
    except BaseException:
        if server is not None:
            server.stop()
        raise
    from flows.runtime import console

    if not verbose:
        quiet_console()
    console.enable()
    with use_api(server):
        ready = time.perf_counter()
        result = _run_flow(flow, parameters)
    timings = {
        "startup_seconds": round(ready - started, 3),
        "flow_seconds": round(time.perf_counter() - started, 3),
    }
    return result, timings


def _run_flow(flow: Any, parameters: dict[str, Any]) -> Any:
    """Run a flow; Prefect's own failures (an unreachable API, a server that did not start)
    become one-line errors too."""
    import httpx
    from prefect.exceptions import PrefectException

    try:
        return flow(**parameters)
    except NetcoreError:
        raise
    except (httpx.HTTPError, PrefectException, RuntimeError) as error:
        raise click.ClickException(f"Prefect: {type(error).__name__}: {error}") from None
