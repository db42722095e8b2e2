"""`digitflow predict INPUT`: score a folder of digit images with a published version.

The arguments are checked first (a missing folder, an unknown output format, an object store or
a Dask scheduler that cannot be reached fail at once, in one line); then, through
flows/cli/runner.py, Prefect's embedded server, the worker processes and the imports all start
up together. The flow itself is flows/predict/flow.py.

A small job (at most SMALL_JOB files, found by a look at the input before Prefect starts; and
no --workers given) is scored in the flow's own process: starting worker processes would cost
more than they save, and its flow run skips the heartbeat thread, whose end the flow waits for.
"""

from __future__ import annotations

import functools
import json
import socket
import urllib.parse
from typing import Any

import click
from PIL import Image

from flows.cli.runner import run_flow_command
from flows.predict.pool import worker_pool
from flows.predict.score import ENGINES
from flows.predict.shards import DEFAULT_SHARD_SIZE
from flows.predict.sources import check_arguments, default_workers, is_small
from netcore.images import DEFAULT_MAX_PIXELS

SCHEDULER_TIMEOUT = 10  # seconds to learn that no Dask scheduler answers at --dask-address
DASK_PORT = 8786  # the scheduler's usual port, when --dask-address names none


@click.command(
    "predict",
    epilog="""\b
Examples:
  digitflow predict scans/                 # -> DIGITFLOW_HOME/predictions/scans.parquet
  digitflow predict scans/ --model data/models@v2 --output scans.csv
  digitflow predict s3://bucket/inbox --output inbox.jsonl --json
  digitflow predict scans/ --resume                      # after a crash: score only what is missing
  digitflow predict scans/ --task-runner dask --dask-address tcp://scheduler:8786
  digitflow predict scans/ --engine onnx                 # the version's model.onnx, onnxruntime

Output: one row per image file (PNG, JPEG, BMP, GIF, TIFF, WebP by extension, any case): path,
label, confidence, prob_0..prob_9, error, model_version, model_alias, path_hex (a name that is
not UTF-8, as hex). Other files are skipped and counted.""",
)
@click.argument("input")
@click.option(
    "--model",
    help="REGISTRY_OR_PATH[@VERSION]: a registry (folder or fsspec URL) and a version or alias "
    "(v3, 3, latest, production...), or a version folder. [default: DIGITFLOW_HOME/models@"
    "production, which is latest until a first promotion]",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    help="FILE.parquet, .csv or .jsonl. [default: DIGITFLOW_HOME/predictions/INPUT-NAME.parquet]",
)
@click.option("--resume", is_flag=True, help="Keep the shards an interrupted run finished.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes (or Dask workers) scoring in parallel. [default: the cores "
    "available; none for at most 1,000 files, scored in the command's own process]",
)
@click.option(
    "--task-runner",
    type=click.Choice(["thread", "dask"]),
    default="thread",
    show_default=True,
    help="thread: Prefect's thread pool handing shards to worker processes; dask: prefect-dask.",
)
@click.option(
    "--dask-address", help="An existing Dask scheduler (with --task-runner dask); else a local one."
)
@click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    default=DEFAULT_SHARD_SIZE,
    show_default=True,
    help="Files per Prefect task (memory grows with it; resume keeps whole shards).",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1, Image.MAX_IMAGE_PIXELS),
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    help="Refuse (as an error row, without decoding) images with more pixels than this.",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="netcore",
    show_default=True,
    help="netcore: the version's NumPy network; onnx: its model.onnx run by onnxruntime (the "
    "same probabilities within 1e-5, checked when it was published; faster for a CNN).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("-v", "--verbose", is_flag=True, help="Show Prefect's INFO logs on the console.")
def predict(
    input: str,
    task_runner: str,
    dask_address: str | None,
    workers: int | None,
    as_json: bool,
    verbose: bool,
    **options: Any,
) -> None:
    """Score every image under INPUT (a folder, recursively, or an fsspec URL)."""
    if dask_address and task_runner != "dask":
        raise click.UsageError("--dask-address needs --task-runner dask")
    try:
        source, _ = check_arguments(input, options["output"], options["model"])
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--output'") from None
    if dask_address:
        check_scheduler(dask_address)
    # Unless --workers asks for worker processes, a small job is scored without them.
    small = task_runner == "thread" and workers is None and is_small(source)
    workers = workers or default_workers()
    in_processes = task_runner == "thread" and workers > 1 and not small

    def load() -> tuple[Any, dict[str, Any]]:
        if in_processes:
            worker_pool(workers, options["engine"])  # they start up while Prefect does too
        from flows.predict.flow import predict_flow  # imports Prefect: after its settings

        runner = _task_runner(task_runner, workers, dask_address)
        parameters = {"input": input, "workers": 1 if small else workers}
        parameters["worker_processes"] = in_processes
        return predict_flow.with_options(task_runner=runner), parameters | options

    # A small job ends long before its first heartbeat would be due (every 180 s).
    settings = {"flows.heartbeat_frequency": None} if small else {}
    preload = functools.partial(_preload, options["engine"])
    summary, _ = run_flow_command(verbose, load, preload=preload, settings=settings)
    if as_json:
        click.echo(json.dumps(summary))
        return
    histogram = " ".join(f"{k}:{n}" for k, n in summary["histogram"].items())
    click.echo(
        f"scored {summary['scored']}, failed {summary['failed']}, skipped {summary['skipped']} "
        f"with {summary['model_version']} -> {summary['output']}\n"
        f"  {summary['images']} images in {summary['seconds']:.1f} s "
        f"({summary['images_per_second']:.0f}/s); labels {histogram}"
    )


def _preload(engine: str) -> None:
    """What the flow would otherwise import on first use, done while the server boots: Prefect's
    task engine (on the first task submitted), pyarrow's lazy imports (on the first part
    merged in this process) and, for the onnx `engine`, onnxruntime (a small job scores here)."""
    import prefect.task_engine  # noqa: F401

    from flows.predict.score import warm_up

    warm_up(engine)


def _task_runner(kind: str, workers: int, address: str | None) -> Any:
    if kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        # Twice the workers: while one task waits for its worker process, the next is queued.
        return ThreadPoolTaskRunner(max_workers=2 * workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise click.UsageError(
            "--task-runner dask needs prefect-dask: pip install 'digitflow[dask]'"
        ) from None

    if address:
        # A scheduler that goes away after check_scheduler: the same one line, as quickly.
        return DaskTaskRunner(address=address, client_kwargs={"timeout": SCHEDULER_TIMEOUT})
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True}
    )


def check_scheduler(address: str) -> None:
    """Whether a Dask scheduler listens at `address` (tcp://host:port), asked before Prefect
    starts: a UsageError in one line within SCHEDULER_TIMEOUT seconds if none does (Dask's own
    client would wait 30 s, then fail inside the flow)."""
    target = urllib.parse.urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = target.hostname, target.port or DASK_PORT
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--dask-address'") from None
    if target.scheme not in ("tcp", "tls") or not host:
        raise click.BadParameter(
            f"{address}: expected tcp://HOST:PORT", param_hint="'--dask-address'"
        )
    try:
        socket.create_connection((host, port), timeout=SCHEDULER_TIMEOUT / 2).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise click.ClickException(
            f"no Dask scheduler answers at {address} ({reason}); start one (make dask-up) or "
            "check --dask-address"
        ) from None
