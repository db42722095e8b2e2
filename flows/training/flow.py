"""The training pipeline as a Prefect flow: download -> prepare -> train -> evaluate -> compare
-> publish.

    from flows.training.flow import training_flow
    summary = training_flow(source="../shared/data/mnist", training={"epochs": 5})
    summary["version"], summary["artifact"], summary["test_accuracy"]

Each stage is a task that calls the stage's plain function and creates the stage's Prefect
artifacts, nothing more:

    download  flows/training/download.py   MNIST from the Hub, a folder or a URL -> raw Parquet
    prepare   flows/training/prepare.py    raw Parquet -> pixel and label arrays (.npy)
    train     flows/training/train.py      netcore's trainer, checkpointing in the run folder
    evaluate  flows/training/evaluate.py   test metrics, probabilities, pictures
    compare   flows/training/champion.py   against production (the champion): promote or not?
    publish   flows/training/publish.py    the gate, ONNX, model card -> the next version;
              flows/training/champion.py   then production moves to it, if compare said so

With `skip_unchanged` (scheduled runs) a run whose data and whole configuration equal those of
the production (or latest) version stops before downloading: it would learn nothing new.

Tasks pass file paths and small dicts, never big arrays. Download and prepare are cached by
Prefect (task source + inputs, the source's file hashes among them), and a cached result is used
only while the files it names still have their recorded hashes. The run's bookkeeping (paths,
timings, provenance, the summary) is flows/training/run.py. `digitflow train`
(flows/cli/train.py) is the command-line front.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.runtime import flow_run

from flows.paths import RunFolder, prefect_results_dir, processed_dir, raw_dir
from flows.registry.promotion import DEFAULT_POLICY
from flows.reports.comparison import champion_markdown, skipped_markdown, skipped_text
from flows.reports.evaluation import evaluation_markdown, per_class_rows
from flows.reports.inline import figures_markdown
from flows.runtime import console
from flows.runtime.api_watch import artifact
from flows.training.champion import (
    compare_with_champion,
    promote_run,
    unchanged_version,
)
from flows.training.download import download
from flows.training.evaluate import evaluate_run
from flows.training.prepare import prepare
from flows.training.publish import publish_run
from flows.training.run import TrainingRun
from flows.training.run_config import DEFAULT_MIN_ACCURACY
from flows.training.train import train_model
from netcore.io import files_intact

CACHED = dict(
    cache_policy=TASK_SOURCE + INPUTS,
    persist_result=True,
    result_serializer="json",  # cached results are read back: JSON, never pickle
)


def _timed(function: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Adds "work_seconds", the time spent inside the task function, to its result: the work,
    against which docs/benchmarks.md measures what Prefect adds."""

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> dict[str, Any]:
        started = time.perf_counter()
        result = function(*args, **kwargs)
        return {**result, "work_seconds": round(time.perf_counter() - started, 3)}

    return timed


def _note(message: str) -> None:
    """A line for the Prefect log and, under the CLI, the terminal."""
    console.note(message, get_run_logger().info)


# No task retries: the Hub client retries transient errors itself, and an unreachable Hub or a
# bad file must fail at once with its message.
@task(name="download", **CACHED)
@_timed
def download_task(
    source: str,
    revision: str | None,
    fingerprint: str,
    raw_dir: str,
    expected_rows: dict[str, int],
) -> dict[str, Any]:
    # `fingerprint` (the source files' hashes) is unused here but part of the cache key.
    return download(source, revision, raw_dir, expected_rows)


@task(name="prepare", **CACHED)
@_timed
def prepare_task(raw_files: dict[str, dict[str, Any]], processed_dir: str) -> dict[str, Any]:
    # The raw files' sha256 are inside `raw_files`, so the cache key covers their content.
    return prepare({split: f["path"] for split, f in raw_files.items()}, processed_dir)


def _cached_stage(stage: Any, *args: Any) -> tuple[dict[str, Any], bool]:
    """Run a cached task; returns (result, whether it came from the cache). A cached result
    whose files are missing or changed is refreshed."""
    storage = prefect_results_dir()
    state = stage.with_options(result_storage=storage)(*args, return_state=True)
    result, cached = state.result(), state.name == "Cached"
    if cached and not files_intact(result["files"]):
        _note(f"{stage.name}: the cached files changed or are missing; redoing it")
        state = stage.with_options(result_storage=storage, refresh_cache=True)(
            *args, return_state=True
        )
        result, cached = state.result(), False
    return result, cached


@task(name="train")
@_timed
def train_task(
    prepared: dict[str, Any], network_config: dict[str, Any], training: dict[str, Any], run_dir: str
) -> dict[str, Any]:
    run = RunFolder(Path(run_dir))
    return train_model(prepared, network_config, training, run, get_run_logger().info)


@task(name="evaluate")
@_timed
def evaluate_task(prepared: dict[str, Any], trained: dict[str, Any], run_dir: str) -> dict:
    run = RunFolder(Path(run_dir))
    evaluation = evaluate_run(prepared, trained, run)
    artifact(
        create_markdown_artifact,
        markdown=figures_markdown(evaluation.figures),
        key="mnist-evaluation-figures",
        description="Training curves, confusion matrix, confident mistakes, first-layer weights",
    )
    artifact(
        create_table_artifact,
        table=per_class_rows(evaluation.metrics),
        key="mnist-evaluation-per-class",
        description=f"Per-class precision and recall on the MNIST test set ({run_dir})",
    )
    artifact(
        create_markdown_artifact,
        markdown=evaluation_markdown(evaluation.metrics),
        key="mnist-evaluation",
        description="Test accuracy, confusion matrix and most-confused pairs",
    )
    return {"test_accuracy": evaluation.test_accuracy, "metrics": str(run.metrics)}


@task(name="skip-unchanged")
def unchanged_task(
    registry: str, fingerprint: str, requested: dict[str, Any]
) -> dict[str, str] | None:
    same = unchanged_version(registry, fingerprint, **requested)
    if same:
        _note(skipped_text(same))
        artifact(
            create_markdown_artifact,
            markdown=skipped_markdown(same),
            key="mnist-training-skipped",
            description="A scheduled run skipped: nothing new to learn",
        )
    return same


@task(name="compare")
@_timed
def compare_task(prepared: dict[str, Any], run_dir: str, registry: str, policy: str) -> dict:
    record = compare_with_champion(prepared, RunFolder(Path(run_dir)), registry, policy)
    artifact(
        create_markdown_artifact,
        markdown=champion_markdown(record),
        key="mnist-champion-challenger",
        description="This run against the production version, and the promotion decision",
    )
    return record


@task(name="publish")
@_timed
def publish_task(
    prepared: dict[str, Any],
    run_dir: str,
    registry: str,
    min_accuracy: float,
    provenance: dict[str, Any],
    compared: dict[str, Any],
) -> dict[str, Any]:
    run = RunFolder(Path(run_dir))
    warn = get_run_logger().warning
    publication = publish_run(prepared, run, registry, min_accuracy, provenance, warn)
    promotion = {"promoted": False, "promotion": "not published", "entry": None}
    if publication.published:
        promotion = promote_run(
            registry, publication.version, compared, provenance["flow_run"]["id"]
        )
        accuracy = provenance["test_accuracy"]
        artifact(
            create_link_artifact,
            link=publication.link,
            link_text=f"MNIST model {publication.version} (test accuracy {accuracy:.2%})",
            key="mnist-model",
            description=f"The published model version {publication.version} in {registry}",
        )
        artifact(
            create_markdown_artifact,
            markdown=publication.card,
            key="mnist-model-card",
            description=f"The model card (README.md) of {publication.version}, figures inlined",
        )
    return {
        "published": publication.published,
        "version": publication.version,
        "location": publication.location,
        **promotion,
    }


@flow(name="mnist-training", log_prints=False)
def training_flow(
    source: str | None = None,
    revision: str | None = None,
    arch: str = "mlp",
    hidden: list[int] | None = None,
    activation: str | None = None,
    training: dict[str, Any] | None = None,
    min_accuracy: float = DEFAULT_MIN_ACCURACY,
    registry: str | None = None,
    expected_rows: dict[str, int] | None = None,
    promote: str = DEFAULT_POLICY,
    skip_unchanged: bool = False,
) -> dict[str, Any]:
    """Train an MNIST classifier, publish it if its test accuracy passes `min_accuracy`, and
    make it production if `promote` (never, if-better, if-not-worse, always) says so against
    the current production version. With `skip_unchanged`, stop at once when production (or
    latest) was trained on the same data with the same configuration.

    `arch` (mlp or cnn) picks netcore's recipe: its network (the MLP's `hidden` widths and
    `activation` may change it) and its training configuration, whose fields `training` changes.

    Defaults: source $DIGITFLOW_MNIST_SOURCE or ylecun/mnist; registry DIGITFLOW_HOME/models;
    the MLP 784-128-10 relu and its training configuration; full-MNIST row counts."""
    run = TrainingRun.begin(source, revision, registry, min_accuracy, expected_rows, promote)
    requested = {"arch": arch, "hidden": hidden, "activation": activation, "training": training}
    if skip_unchanged and (same := unchanged_task(run.registry, run.fingerprint, requested)):
        return run.skipped(same, flow_run.get_id())
    with run.stage("download"):
        raw, run.cached["download"] = _cached_stage(
            download_task, run.source, revision, run.fingerprint, str(raw_dir()), run.expected_rows
        )
    _note(run.download_line(raw))

    with run.stage("prepare"):
        prepared, run.cached["prepare"] = _cached_stage(
            prepare_task, raw["files"], str(processed_dir())
        )
    _note(run.prepare_line())

    folder = run.configure(prepared, **requested)
    path = str(folder.path)  # the run folder, as the tasks take it
    with run.stage("train"):
        trained = train_task(prepared, run.network.to_dict(), run.training.to_dict(), path)
    _note(run.train_line(trained))

    with run.stage("evaluate"):
        evaluated = evaluate_task(prepared, trained, path)
    _note(run.evaluate_line(evaluated))

    with run.stage("compare"):
        compared = compare_task(prepared, path, run.registry, promote)
    _note(run.compare_line(compared))

    provenance = run.provenance(
        raw, prepared, trained, evaluated["test_accuracy"], flow_run.get_id(), flow_run.get_name()
    )
    with run.stage("publish"):
        published = publish_task(prepared, path, run.registry, min_accuracy, provenance, compared)
    _note(run.publish_line(published, evaluated))

    folder.checkpoint.unlink(missing_ok=True)  # the run is complete: the next one starts afresh
    return run.summary(raw, prepared, trained, evaluated, compared, published, folder)
