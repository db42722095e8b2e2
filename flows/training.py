"""The training pipeline as a Prefect flow: download -> prepare -> train -> evaluate -> publish.

    from flows.training import training_flow
    summary = training_flow(source="../shared/data/mnist", training={"epochs": 5})
    summary["version"], summary["artifact"], summary["test_accuracy"]

Each stage is a task whose logic lives in a plain module (download, prepare, netcore's trainer,
evaluation, registry); tasks pass file paths and small dicts, never big arrays. Download and
prepare are cached by Prefect (task source + inputs, the source's file hashes among them), and a
cached result is used only while the files it names still have their recorded hashes. Training
checkpoints into the run folder after every epoch, so a rerun after a crash resumes; the run folder
(DIGITFLOW_HOME/runs/<key of the data and configuration>) also keeps what evaluate writes for
later stages and pictures. `digitflow train` (flows/cli.py) is the command-line front.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.runtime import flow_run

from flows import console
from flows.download import FULL_MNIST_ROWS, download, source_fingerprint
from flows.evaluation import (
    METRICS_FILE,
    evaluate,
    evaluation_markdown,
    per_class_rows,
    save_evaluation,
)
from flows.figures import FIGURES_DIR, existing_figures, model_figures
from flows.files import files_intact, stable_hash, write_json
from flows.inline import figures_markdown, inline_images
from flows.model_card import model_card
from flows.onnx_export import check_parity, save_onnx, to_onnx
from flows.prepare import load_split, prepare
from flows.provenance import git_state, package_versions, utc_now
from flows.registry import publish
from flows.run_config import DEFAULT_MIN_ACCURACY, default_hidden
from flows.settings import data_home, default_registry, mnist_source
from netcore.config import NetworkConfig, TrainConfig
from netcore.network import Network
from netcore.trainer import EpochStats, train
from netcore.weights import CONFIG_FILE, WEIGHTS_FILE, load_model, save_model

CACHED = dict(
    cache_policy=TASK_SOURCE + INPUTS,
    persist_result=True,
    result_serializer="json",  # cached results are read back: JSON, never pickle
)
CHECKPOINT_FILE = "checkpoint.safetensors"
MODEL_DIR = "model"
HISTORY_FILE = "history.json"


def preload_libraries() -> None:
    """Import what the stages import on first use (datasets ~1.5 s, onnxruntime). The CLI calls
    this while the embedded Prefect server boots on the other core, when the time is free."""
    import datasets  # noqa: F401
    import onnxruntime  # noqa: F401


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
    get_run_logger().info(message)
    console.say(message)


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


def _cached_stage(stage: Any, storage: Path, *args: Any) -> tuple[dict[str, Any], bool]:
    """Run a cached task; returns (result, whether it came from the cache). A cached result
    whose files are missing or changed is refreshed."""
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
    logger = get_run_logger()
    config = TrainConfig.from_dict(training)
    network = Network(NetworkConfig.from_dict(network_config), np.random.default_rng(config.seed))
    pixels, labels = load_split(prepared, "train")
    run = Path(run_dir)
    checkpoint = run / CHECKPOINT_FILE
    if checkpoint.exists():
        _note(f"train: resuming from the checkpoint in {run}")

    with console.progress(config.epochs, "train") as bar:

        def on_epoch(stats: EpochStats) -> None:
            validation = (
                f", validation accuracy {stats.validation_accuracy:.4f}"
                if stats.validation_accuracy is not None
                else ""
            )
            logger.info(
                f"epoch {stats.epoch}/{config.epochs}: loss {stats.loss:.4f}, train accuracy "
                f"{stats.train_accuracy:.4f}{validation}, lr {stats.learning_rate:.4g}, "
                f"{stats.seconds:.2f} s"
            )
            bar.update(1)

        started = time.perf_counter()
        result = train(network, pixels, labels, config, on_epoch, checkpoint_path=checkpoint)
        seconds = time.perf_counter() - started
        if result.resumed_from_epoch:
            bar.update(result.resumed_from_epoch)
    save_model(network, run / MODEL_DIR, config)
    history = [asdict(stats) for stats in result.history]
    write_json(run / HISTORY_FILE, history)
    return {
        "model_dir": str(run / MODEL_DIR),
        "epochs": len(history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "train_seconds": round(seconds, 3),
        "final_loss": history[-1]["loss"],
        "finished_at": utc_now(),
    }


@task(name="evaluate")
@_timed
def evaluate_task(prepared: dict[str, Any], trained: dict[str, Any], run_dir: str) -> dict:
    network = load_model(trained["model_dir"])
    pixels, labels = load_split(prepared, "test")
    metrics, probabilities = evaluate(network, pixels, labels)
    metrics["training"] = {
        **{k: v for k, v in trained.items() if k not in ("model_dir", "finished_at")},
        "history": json.loads((Path(run_dir) / HISTORY_FILE).read_text()),
    }
    save_evaluation(run_dir, metrics, probabilities)
    drawn = model_figures(
        Path(run_dir) / FIGURES_DIR,
        metrics["training"]["history"],
        pixels,
        labels,
        probabilities,
        network.weights[0],
    )
    create_markdown_artifact(
        markdown=figures_markdown(drawn),
        key="mnist-evaluation-figures",
        description="Training curves, confusion matrix, confident mistakes, first-layer weights",
    )
    create_table_artifact(
        table=per_class_rows(metrics),
        key="mnist-evaluation-per-class",
        description=f"Per-class precision and recall on the MNIST test set ({run_dir})",
    )
    create_markdown_artifact(
        markdown=evaluation_markdown(metrics),
        key="mnist-evaluation",
        description="Test accuracy, confusion matrix and most-confused pairs",
    )
    return {"test_accuracy": metrics["test_accuracy"], "metrics": str(Path(run_dir) / METRICS_FILE)}


def extra_version_files(run_dir: str | Path) -> dict[str, Path]:
    """Files a published version carries besides the model, config, metrics and ONNX model:
    {name inside the version: file}. Today: everything under run_dir/figures/ (the pictures,
    flows/figures.py, are drawn there during the run). Add more here."""
    figures = Path(run_dir) / FIGURES_DIR
    if not figures.is_dir():
        return {}
    return {
        f"figures/{path.relative_to(figures).as_posix()}": path
        for path in sorted(figures.rglob("*"))
        if path.is_file()
    }


@task(name="publish")
@_timed
def publish_task(
    prepared: dict[str, Any],
    run_dir: str,
    registry: str,
    min_accuracy: float,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    run = Path(run_dir)
    metrics = json.loads((run / METRICS_FILE).read_text())
    accuracy = metrics["test_accuracy"]
    if accuracy < min_accuracy:
        get_run_logger().warning(
            f"not published: test accuracy {accuracy:.4f} is below the gate {min_accuracy}"
        )
        return {"published": False, "version": None, "location": None}

    payload = run / "payload"
    shutil.rmtree(payload, ignore_errors=True)
    payload.mkdir()
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        shutil.copy2(run / MODEL_DIR / name, payload / name)
    shutil.copy2(run / METRICS_FILE, payload / METRICS_FILE)
    network = load_model(payload)
    onnx_model = to_onnx(network)
    worst = check_parity(onnx_model, network, load_split(prepared, "test")[0])
    save_onnx(onnx_model, payload / "model.onnx")
    for name, source in extra_version_files(run).items():
        (payload / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, payload / name)
    provenance = {**provenance, "onnx_max_abs_difference": worst}
    figures = [
        (caption, f"{FIGURES_DIR}/{path.name}")
        for caption, path in existing_figures(payload / FIGURES_DIR)
    ]

    def describe(version: str) -> dict[str, str]:
        return {"README.md": model_card(version, metrics, provenance, figures)}

    version, location = publish(registry, payload, describe, provenance)
    link = location if "://" in location else Path(location).resolve().as_uri()
    create_link_artifact(
        link=link,
        link_text=f"MNIST model {version} (test accuracy {accuracy:.2%})",
        key="mnist-model",
        description=f"The published model version {version} in {registry}",
    )
    create_markdown_artifact(
        markdown=inline_images(model_card(version, metrics, provenance, figures), payload),
        key="mnist-model-card",
        description=f"The model card (README.md) of {version}, figures inlined",
    )
    return {"published": True, "version": version, "location": location}


def run_key(network_config: NetworkConfig, training: TrainConfig, prepared: dict) -> str:
    """Names the run folder: the same data and configuration resume the same checkpoint."""
    data = {name: f["sha256"] for name, f in prepared["files"].items()}
    return stable_hash(
        {"network": network_config.to_dict(), "training": training.to_dict(), "data": data}
    )[:16]


@flow(name="mnist-training", log_prints=False)
def training_flow(
    source: str | None = None,
    revision: str | None = None,
    hidden: list[int] | None = None,
    activation: str = "relu",
    training: dict[str, Any] | None = None,
    min_accuracy: float = DEFAULT_MIN_ACCURACY,
    registry: str | None = None,
    expected_rows: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Train an MNIST classifier and publish it if its test accuracy passes `min_accuracy`.

    Defaults: source $DIGITFLOW_MNIST_SOURCE or ylecun/mnist; registry DIGITFLOW_HOME/models;
    netcore's default network and training configuration; full-MNIST row counts."""
    flow_started = utc_now()
    home = data_home().resolve()
    source = source or mnist_source()
    registry = registry or default_registry()
    storage = home / "prefect-results"
    seconds: dict[str, float] = {}

    clock = time.perf_counter()
    fingerprint = source_fingerprint(source, revision)
    raw, download_cached = _cached_stage(
        download_task,
        storage,
        source,
        revision,
        fingerprint,
        str(home / "raw" / "mnist"),
        expected_rows or FULL_MNIST_ROWS,
    )
    rows = ", ".join(f"{f['rows']:,} {split}" for split, f in raw["files"].items())
    seconds["download"] = time.perf_counter() - clock
    _note(
        f"download: {'reused the cached copy' if download_cached else 'done'} "
        f"({rows} rows from {source}) in {seconds['download']:.1f} s"
    )

    clock = time.perf_counter()
    prepared, prepare_cached = _cached_stage(
        prepare_task, storage, raw["files"], str(home / "processed" / "mnist")
    )
    seconds["prepare"] = time.perf_counter() - clock
    _note(
        f"prepare: {'reused the cached arrays' if prepare_cached else 'done'} in "
        f"{home / 'processed' / 'mnist'} in {seconds['prepare']:.1f} s"
    )

    train_config = TrainConfig.from_dict(training or {})
    network_config = NetworkConfig(
        layer_sizes=[784, *(hidden or default_hidden()), 10],
        activation=activation,
        pixel_mean=prepared["pixel_mean"],
        pixel_std=prepared["pixel_std"],
    )
    run_dir = home / "runs" / run_key(network_config, train_config, prepared)
    clock = time.perf_counter()
    trained = train_task(prepared, network_config.to_dict(), train_config.to_dict(), str(run_dir))
    seconds["train"] = time.perf_counter() - clock
    _note(
        f"train: {trained['epochs']} epochs in {trained['train_seconds']:.1f} s, "
        f"final loss {trained['final_loss']:.4f}"
    )

    clock = time.perf_counter()
    evaluated = evaluate_task(prepared, trained, str(run_dir))
    seconds["evaluate"] = time.perf_counter() - clock
    _note(f"evaluate: test accuracy {evaluated['test_accuracy']:.2%}")

    provenance = {
        "registry": registry,
        "config": {"network": network_config.to_dict(), "training": train_config.to_dict()},
        "data": {
            "source": source,
            "revision": revision,
            "fingerprint": fingerprint,
            "raw": {s: {"sha256": f["sha256"], "rows": f["rows"]} for s, f in raw["files"].items()},
            "processed": {name: f["sha256"] for name, f in prepared["files"].items()},
        },
        "test_accuracy": evaluated["test_accuracy"],
        "min_accuracy": min_accuracy,
        "git": git_state(),
        "packages": package_versions(),
        "flow_run": {"id": flow_run.get_id(), "name": flow_run.get_name()},
        "timestamps": {"flow_started": flow_started, "finished_training": trained["finished_at"]},
    }
    clock = time.perf_counter()
    published = publish_task(prepared, str(run_dir), registry, min_accuracy, provenance)
    seconds["publish"] = time.perf_counter() - clock
    if published["published"]:
        _note(f"publish: {published['version']} -> {published['location']}")
    else:
        _note(
            f"publish: skipped, test accuracy {evaluated['test_accuracy']:.2%} is below the "
            f"gate {min_accuracy:.2%}"
        )
    # The run is complete: the next run with this configuration starts afresh.
    (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    return {
        "version": published["version"],
        "published": published["published"],
        "test_accuracy": evaluated["test_accuracy"],
        "min_accuracy": min_accuracy,
        "artifact": published["location"],
        "registry": registry,
        "train_seconds": trained["train_seconds"],
        "epochs": trained["epochs"],
        "resumed_from_epoch": trained["resumed_from_epoch"],
        "download_cached": download_cached,
        "prepare_cached": prepare_cached,
        "stage_seconds": {name: round(value, 3) for name, value in seconds.items()},
        "work_seconds": {
            "download": 0.0 if download_cached else raw["work_seconds"],
            "prepare": 0.0 if prepare_cached else prepared["work_seconds"],
            "train": trained["work_seconds"],
            "evaluate": evaluated["work_seconds"],
            "publish": published["work_seconds"],
        },
        "run_dir": str(run_dir),
        "flow_run_id": flow_run.get_id(),
    }
