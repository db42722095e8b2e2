"""What every command that runs a flow does, in one place (`digitflow train`, `digitflow
predict`): Prefect's settings; the embedded Prefect server (unless one is configured) booting
while the command imports its flow; a quiet console with digitflow's stage lines; the run, whose
Prefect failures become one-line errors too.

    result, timings = run_flow_command(verbose, lambda: (my_flow, {"x": 1}))

Prefect reads its settings once, at import, so a command imports its flow module only inside
`load`, which runs after configure_prefect.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import time
from collections.abc import Callable
from typing import Any

import click

from flows.runtime.api_watch import ApiLost, ApiWatch
from flows.runtime.server import EmbeddedServer, abandon_deliveries, use_api
from flows.runtime.settings import configure_prefect, quiet_console
from netcore.errors import NetcoreError
from netcore.io import NO_ROOM


def run_flow_command(
    verbose: bool,
    load: Callable[[], tuple[Any, dict[str, Any]]],
    preload: Callable[[], None] | None = None,
    settings: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, float]]:
    """What a command that runs a flow does: Prefect's settings; the embedded Prefect server
    (unless one is configured) booting while `load()` imports the flow and returns it with its
    parameters, and `preload()` imports what the flow needs later (only while a server boots:
    then the time is free); a quiet console with digitflow's stage lines; the run, with
    Prefect's `settings` changed for it ({"flows.heartbeat_frequency": None}, say), whose
    Prefect failures (an unreachable API, a server that did not start) become one-line errors
    too.

    Returns the flow's result and {"startup_seconds", "flow_seconds"}, counted from the call."""
    configure_prefect(verbose)
    started = time.perf_counter()
    server = EmbeddedServer.start_unless_configured()
    gc.disable()  # imports make no garbage: the collector's passes would only cost time
    try:
        flow, parameters = load()  # imports Prefect: after configure_prefect
        if server is not None:
            _import_first_call_modules()
            if preload is not None:
                preload()
    except BaseException:
        if server is not None:
            server.stop()
        raise
    finally:
        gc.freeze()  # what the imports made lives as long as the process: no need to walk it
        gc.enable()
    from flows.runtime import console

    if not verbose:
        quiet_console()
    console.enable()
    from prefect.settings import temporary_settings

    with use_api(server) as api_url, temporary_settings(updates=settings):
        ready = time.perf_counter()
        result = _run_flow(flow, parameters, api_url)
    timings = {
        "startup_seconds": round(ready - started, 3),
        "flow_seconds": round(time.perf_counter() - started, 3),
    }
    return result, timings


# What Prefect imports on a process's first flow call (prefect/flows.py): the flow engine, the
# visualization helpers, and FastAPI's encoder for the parameters; some 120 modules.
FIRST_CALL_IMPORTS = ("prefect.flow_engine", "prefect.utilities.visualization", "fastapi.encoders")


def _import_first_call_modules() -> None:
    """Import FIRST_CALL_IMPORTS now, while the embedded server boots and the time is free. Only
    a head start: a module a later Prefect no longer has is left out."""
    for name in FIRST_CALL_IMPORTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _run_flow(flow: Any, parameters: dict[str, Any], api_url: str | None) -> Any:
    """Run a flow, watching its API (flows/runtime/api_watch.py); Prefect's own failures (an
    unreachable API, a server that did not start) become one-line errors too.

    If the API stops answering: a flow whose work is done (its body returned) returns its result
    all the same, with a line saying the run's record in Prefect is incomplete; otherwise the
    error says what the flow kept for the next run (ApiLost). Either way nothing waits for the
    API any longer."""
    flow, outcome = _keeping_result(flow)
    with ApiWatch.watching(api_url, on_loss=_stop_retrying()) as watch:
        try:
            result = flow(**parameters)
        except BaseException as error:
            if not watch.is_lost():
                raise _one_line(error) from None
            abandon_deliveries()
            if "result" not in outcome:
                raise _one_line(error, watch) from None
            result = outcome["result"]
        if watch.is_lost():
            abandon_deliveries()
            click.echo(
                f"digitflow: {watch.loss()}: the work is done, but the run's record in Prefect "
                "is incomplete",
                err=True,
            )
        return result


def _keeping_result(flow: Any) -> tuple[Any, dict[str, Any]]:
    """A copy of `flow` whose body also leaves its return value in the dict returned: when the
    API is gone, Prefect fails to record the run's end and raises, though the work is done."""
    body = flow.fn
    outcome: dict[str, Any] = {}

    @functools.wraps(body)
    def keeping(*args: Any, **kwargs: Any) -> Any:
        outcome["result"] = body(*args, **kwargs)
        return outcome["result"]

    copy = flow.with_options()
    copy.fn = keeping  # Prefect calls `fn` (its signature is the body's, through wraps)
    return copy, outcome


def _stop_retrying() -> Callable[[], None]:
    """What the watch does when the API is lost: Prefect's client stops retrying its calls (it
    reads the setting before each retry), so the flow's end is not held up by a minute of
    retries a call. This run's settings object is changed in place: the flow and its task
    threads share it."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()

    def stop() -> None:
        settings.client.max_retries = 0

    return stop


def _one_line(error: BaseException, lost: ApiWatch | None = None) -> BaseException:
    """What to tell of a failed flow: the NetcoreError behind it (when the API is gone, Prefect
    raises its own errors after the flow's, failing to record the failure); else, with the API
    `lost`, what that stopped; else Prefect's own failures in a line; anything else as it is."""
    import httpx
    from prefect.exceptions import PrefectException

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, NetcoreError):
            return seen
        seen = seen.__cause__ or seen.__context__
    if lost is not None:
        return ApiLost(f"{lost.loss()}; stopped: whatever finished is kept, run it again")
    if isinstance(error, httpx.HTTPError | PrefectException | RuntimeError):
        return click.ClickException(f"Prefect: {type(error).__name__}: {error}")
    if isinstance(error, OSError) and error.errno not in NO_ROOM:
        # What a task runner met outside the flow's own code: a Dask scheduler that went away.
        return click.ClickException(f"{type(error).__name__}: {error}")
    return error
