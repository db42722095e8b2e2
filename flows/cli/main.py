"""The `digitflow` command line (click): `digitflow --help` lists the commands.

    digitflow train [--source ...] [--epochs N] [--config train.toml] [--json]
    digitflow predict scans/ [--model data/models@v3] [--output scans.parquet]
    digitflow models list | digitflow models show v3
    digitflow report [VERSION] | digitflow serve --cron "0 3 * * *"

This module is the group: it registers one command per module of flows/cli/ (train, predict,
models, report, serve), and turns every error a user can cause (a NetcoreError, a click usage
error, an unreachable Prefect API, a full disk) into one line, "digitflow: error: ...", on stderr
with a non-zero exit: never a traceback. Commands that run a flow share flows/cli/runner.py; no
command imports this module.
"""

from __future__ import annotations

import os

# One BLAS thread unless the user asks for more (DIGITFLOW_BLAS_THREADS, or OPENBLAS_NUM_THREADS
# itself). Set before numpy loads. Measured here (docs/benchmarks.md): two OpenBLAS threads are
# faster only on an idle machine; with other work running, an epoch took 10x longer than with one.
os.environ.setdefault("OPENBLAS_NUM_THREADS", os.environ.get("DIGITFLOW_BLAS_THREADS", "1"))

import sys
from typing import Any

import click

from flows.cli.models import models
from flows.cli.predict import predict
from flows.cli.report import report
from flows.cli.serve import serve_command
from flows.cli.train import train
from netcore.errors import DiskFullError, NetcoreError
from netcore.io import NO_ROOM

EXIT_ERROR = 1


class DigitflowGroup(click.Group):
    """A click group whose errors are one line each."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as error:
            hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
            _fail(error.format_message() + hint, error.exit_code)
        except click.ClickException as error:
            _fail(error.format_message(), error.exit_code)
        except DiskFullError as error:
            _fail(f"{error}; free some space and run again", EXIT_ERROR)
        except NetcoreError as error:
            _fail(str(error), EXIT_ERROR)
        except OSError as error:
            if error.errno not in NO_ROOM:
                raise
            # A full disk where no DiskFullError names the file (a library's own write).
            where = error.filename or "a file"
            _fail(f"{where}: cannot write: {NO_ROOM[error.errno]}; free some space", EXIT_ERROR)
        except (click.Abort, KeyboardInterrupt):
            _fail("interrupted", 130)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    first_line = (message.strip().splitlines() or ["failed"])[0]
    click.echo(f"digitflow: error: {first_line}", err=True)
    sys.exit(code)


@click.group(cls=DigitflowGroup)
@click.version_option(package_name="digitflow")
def main() -> None:
    """digitflow: train and serve a from-scratch NumPy digit classifier with Prefect.

    \b
    Examples:
      digitflow train                       # the whole pipeline, ending in a published version
      digitflow models list
      digitflow models show latest
    """


# One line per command, in the order `digitflow --help` lists them.
main.add_command(models)
main.add_command(predict)
main.add_command(report)
main.add_command(serve_command)
main.add_command(train)
