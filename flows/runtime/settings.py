"""How Prefect is set up for digitflow: its settings, and what its loggers may print.

`configure_prefect(verbose)` puts Prefect's settings into the environment; call it before anything
imports prefect (the CLI does), since Prefect reads them once, at import. `quiet_console()` then
keeps failed-run tracebacks off the terminal (the CLI reports errors in one line itself).
"""

from __future__ import annotations

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


class _HideRunFailures(logging.Filter):
    """Drops the ERROR records (with tracebacks) Prefect logs for a failed flow or task run."""

    def filter(self, record: logging.LogRecord) -> bool:
        run_logger = record.name.startswith(("prefect.flow_runs", "prefect.task_runs"))
        return not (run_logger and record.levelno >= logging.ERROR)


class _HideFlushProgress(logging.Filter):
    """Drops "Still processing items: N items remaining...", which Prefect's event and log
    services print while they flush at exit: progress, not a problem, and it would follow the
    CLI's one-line error (tests/reliability/test_cli_walk.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Still processing items")


def quiet_console() -> None:
    """Keep failed-run tracebacks and flush progress off the console (the tracebacks still
    reach the Prefect API).

    Call after prefect is imported, unless verbose; calling it twice is harmless.
    """
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ != "PrefectConsoleHandler":
            continue
        for kind in (_HideRunFailures, _HideFlushProgress):
            if not any(isinstance(f, kind) for f in handler.filters):
                handler.addFilter(kind())
