"""How Prefect is set up for digitflow: its settings, and what its loggers may print.

`configure_prefect(verbose)` puts Prefect's settings into the environment; call it before anything
imports prefect (the CLI does), since Prefect reads them once, at import. `quiet_console()` then
keeps Prefect's own lines (failed-run tracebacks, its services' complaints) off the terminal: the
CLI reports errors in one line itself.
"""

from __future__ import annotations

import importlib.util
import logging
import os

# Settings applied by configure_prefect, documented in the README ("Configuration"): each can
# still be overridden from the environment, except the console level under --verbose.
PREFECT_DEFAULTS = {
    # No telemetry: it only produces connection errors on machines without internet.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # Nor onnxruntime's (on by default on Linux since 1.2x): it writes a device id under
    # ~/.cache/Microsoft and a session file in the temp folder (tests/reliability/test_confinement).
    "ORT_DISABLE_TELEMETRY": "1",
    # The embedded server needs seconds to start, more on a busy machine (docs/benchmarks.md).
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Datasets and the Hub client draw their own progress bars; digitflow prints its own lines.
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}
CONSOLE_LEVEL = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"


def configure_prefect(verbose: bool = False) -> None:
    """Quiet, local Prefect: no telemetry, no INFO lines on the console unless `verbose`.

    Prefect's run loggers stay at INFO, so every log line (the epochs, say) still reaches the
    Prefect API and its UI; only the console handler is raised to WARNING. Without
    PREFECT_API_URL, Prefect starts its embedded (ephemeral) server for the run.
    """
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if verbose:
        os.environ[CONSOLE_LEVEL] = "INFO"
        os.environ.pop("HF_DATASETS_DISABLE_PROGRESS_BARS", None)
    else:
        os.environ.setdefault(CONSOLE_LEVEL, "WARNING")


class _HidePrefectsOwnLines(logging.Filter):
    """Drops what Prefect itself logs (records made by code inside the prefect package): failed
    runs' tracebacks, "Still processing items" while its services flush at exit, and, when its
    API stops answering, a warning and an error per undeliverable event (326 KB of them after
    one prediction, issue 12). What digitflow logs through Prefect's run loggers (a record made
    in flows/) still shows; everything still reaches the Prefect API."""

    def __init__(self) -> None:
        super().__init__()
        self.prefect = os.path.dirname(importlib.util.find_spec("prefect").origin or "") + os.sep

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(self.prefect)


def quiet_console() -> None:
    """Keep Prefect's own lines off the console (the CLI reports errors in one line itself; -v
    shows them all).

    Call after prefect is imported, unless verbose; calling it twice is harmless.
    """
    # Prefect's log worker writes its failures to deliver straight to stderr, as the standard
    # library's handlers do, unless this is off.
    logging.raiseExceptions = False
    # The console handler on the root logger, and the stream handler Prefect gives its internal
    # loggers (its services' errors go there, not to the root).
    handlers = logging.getLogger().handlers + logging.getLogger("prefect._internal").handlers
    for handler in handlers:
        if not isinstance(handler, logging.StreamHandler):
            continue
        if not any(isinstance(f, _HidePrefectsOwnLines) for f in handler.filters):
            handler.addFilter(_HidePrefectsOwnLines())
