"""The `digitflow` console script (pyproject: `digitflow = "flows.cli.entry:run"`): the command
line of flows/cli/main.py, started as quickly as it can be.

- A command that runs a flow with the embedded Prefect server (`predict`, `train`) launches that
  server before anything else is imported (flows/runtime/embedded_server.py): its boot is the
  longest wait of a small job, and the command's imports take a few tenths of a second.
- The garbage collector is off while the command's modules load (again while a command imports
  its flow: flows/cli/runner.py): imports make hundreds of thousands of objects and no garbage,
  and the collector's passes over them are a good part of the import time.
- At the end the collector is frozen (gc.freeze): the interpreter's last collection would walk
  every object Prefect's and pydantic's imports made, a large part of a small command's time,
  to free nothing a process that exits needs freed. Exit handlers still run.

docs/benchmarks.md ("Small jobs") measures each.
"""

from __future__ import annotations

import gc
import sys

# The commands that run a flow, and the options that mean they will not (or will print more).
FLOW_COMMANDS = ("predict", "train")
HELP = ("--help", "-h")
VERBOSE = ("-v", "--verbose")


def run() -> None:
    gc.disable()
    arguments = sys.argv[1:]
    if arguments[:1] and arguments[0] in FLOW_COMMANDS and not set(HELP) & set(arguments):
        from flows.runtime.embedded_server import launch_early
        from flows.runtime.settings import configure_prefect

        configure_prefect(verbose=bool(set(VERBOSE) & set(arguments)))  # the server's settings too
        launch_early()
    from flows.cli.main import main

    gc.enable()
    try:
        main()
    finally:
        gc.freeze()
