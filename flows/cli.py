"""The `digitflow` command line (click): `digitflow --help` lists the commands.

    digitflow train [--source ...] [--epochs N] [--config train.toml] [--json]
    digitflow models list | digitflow models show v3

Every error a user can cause (a NetcoreError, a click usage error, an unreachable Prefect API)
prints one line, "digitflow: error: ...", on stderr and exits non-zero: never a traceback.
Commands are registered in the block at the bottom. Prefect reads its settings once, at import,
so a command that runs a flow imports its flow module only inside the command; `run_flow_command`
does the rest (settings, the embedded server, quiet console, one-line Prefect errors):

    result, timings = run_flow_command(verbose, lambda: (my_flow, {"x": 1}))
"""

from __future__ import annotations

import os

# One BLAS thread unless the user asks for more (DIGITFLOW_BLAS_THREADS, or OPENBLAS_NUM_THREADS
# itself). Set before numpy loads. Measured here (docs/benchmarks.md): two OpenBLAS threads are
# faster only on an idle machine; with other work running, an epoch took 10x longer than with one.
os.environ.setdefault("OPENBLAS_NUM_THREADS", os.environ.get("DIGITFLOW_BLAS_THREADS", "1"))

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from flows.prefect_server import EmbeddedServer, use_api
from flows.settings import configure_prefect, quiet_console
from netcore.errors import NetcoreError

EXIT_ERROR = 1
EXIT_NOT_PUBLISHED = 3


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
        except NetcoreError as error:
            _fail(str(error), EXIT_ERROR)
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


def _hidden_sizes(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        sizes = [int(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected widths like 128 or 256,128") from None
    if any(n < 1 for n in sizes):
        raise click.BadParameter(f"{value!r}: layer widths must be positive")
    return sizes


@main.command(
    epilog="""\b
Examples:
  digitflow train
  DIGITFLOW_MNIST_SOURCE=../shared/data/mnist digitflow train --epochs 10 --json
  digitflow train --config train.toml --hidden 256,128 --registry s3://bucket/models

Precedence: flags, then the environment, then the --config file, then the defaults.
Exit status: 0 published, 3 trained but below --min-accuracy (not published), 1 error."""
)
@click.option(
    "--source",
    help="MNIST source: Hub id, folder or fsspec URL. [env DIGITFLOW_MNIST_SOURCE; ylecun/mnist]",
)
@click.option("--revision", help="Hub dataset revision (branch, tag or commit).")
@click.option("--epochs", type=click.IntRange(min=1), help="Passes over the training set.")
@click.option("--hidden", callback=_hidden_sizes, help="Hidden layer widths, e.g. 128 or 256,128.")
@click.option("--seed", type=int, help="Seeds the weights, shuffles and augmentation.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Examples per SGD step.")
@click.option(
    "--learning-rate", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate."
)
@click.option(
    "--min-accuracy",
    type=click.FloatRange(0, 1),
    help="Publish only at or above this test accuracy. [default 0.97]",
)
@click.option("--registry", help="Model registry: folder or fsspec URL. [DIGITFLOW_HOME/models]")
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="TOML configuration file."
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
@click.option("-v", "--verbose", is_flag=True, help="Show Prefect's INFO logs on the console.")
def train(config_file: str | None, as_json: bool, verbose: bool, **flags: Any) -> None:
    """Run the training pipeline: download, prepare, train, evaluate, publish."""

    def load() -> tuple[Any, dict[str, Any]]:
        from flows.run_config import resolve_run_config
        from flows.training import training_flow

        return training_flow, resolve_run_config(flags, config_file).flow_parameters()

    def preload() -> None:
        from flows.training import preload_libraries

        preload_libraries()

    summary, timings = run_flow_command(verbose, load, preload)
    summary |= timings
    if as_json:
        click.echo(json.dumps(summary))
    elif summary["published"]:
        click.echo(
            f"published {summary['version']} -> {summary['artifact']}\n"
            f"  test accuracy {summary['test_accuracy']:.2%} (gate {summary['min_accuracy']:.2%}), "
            f"{summary['epochs']} epochs, {summary['train_seconds']:.1f} s of training"
        )
    if not summary["published"]:
        click.echo(
            f"digitflow: not published: test accuracy {summary['test_accuracy']:.2%} is below "
            f"the gate {summary['min_accuracy']:.2%} (--min-accuracy)",
            err=True,
        )
        sys.exit(EXIT_NOT_PUBLISHED)


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
    from flows import console

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


# ---- Command registration: one import and one add_command line per command. -----------------
from flows.models_cli import models  # noqa: E402
from flows.predict_cli import predict  # noqa: E402
from flows.report_cli import report  # noqa: E402
from flows.serve import serve_command  # noqa: E402

main.add_command(models)
main.add_command(predict)
main.add_command(report)
main.add_command(serve_command)
