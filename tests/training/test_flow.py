"""The whole training flow under a real Prefect API (the session's test harness), on a real
2,000 / 500-row MNIST subset: publishing, artifacts, cache reuse and refresh, the accuracy gate,
resuming after a crash."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import numpy as np
import pyarrow.parquet as pq
import pytest

from flows.paths import CHECKPOINT_FILE
from flows.registry.aliases import read_history
from flows.registry.versions import list_versions, load_published
from flows.training.flow import training_flow
from netcore import Network, TrainConfig, train
from netcore.config import load_config

SMALL_ROWS = {"train": 2000, "test": 500}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DIGITFLOW_HOME", str(tmp_path / "data"))
    return tmp_path / "data"


def run_flow(source: Path, **options) -> dict:
    parameters = {
        "source": str(source),
        "training": {"epochs": 2, "seed": 0},
        "hidden": [32],
        "min_accuracy": 0.5,
        "expected_rows": SMALL_ROWS,
    }
    return training_flow(**(parameters | options))


def test_flow_publishes_verifiable_versions_reuses_the_cache_and_gates(
    prefect_harness, small_mnist_dir: Path, home: Path
) -> None:
    from prefect.artifacts import Artifact

    first = run_flow(small_mnist_dir)
    assert first["published"] and first["version"] == "v1"
    assert first["artifact"] == str(home.resolve() / "models" / "v1")
    assert first["epochs"] == 2 and first["train_seconds"] > 0
    assert 0.5 <= first["test_accuracy"] <= 1
    assert not first["download_cached"] and not first["prepare_cached"]

    version = Path(first["artifact"])
    assert sorted(p.name for p in version.iterdir()) == [
        "README.md",
        "config.json",
        "figures",
        "manifest.json",
        "metrics.json",
        "model.onnx",
        "model.safetensors",
    ]
    model = load_published(str(home / "models"))  # verifies every checksum
    assert model.version == "v1" and model.metrics["test_accuracy"] == first["test_accuracy"]
    manifest = model.manifest
    assert manifest["flow_run"]["id"] == first["flow_run_id"]
    assert manifest["data"]["raw"]["train"]["rows"] == 2000
    assert len(manifest["git"]["commit"] or "unknown") >= 7
    assert manifest["packages"]["prefect"] and manifest["packages"]["numpy"]
    assert manifest["onnx_max_abs_difference"] <= 1e-5
    files = {p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"manifest.json"}
    # The pictures drawn into the run folder travel with the version (flows/figures.py).
    run_figures = {p.name for p in (Path(first["run_dir"]) / "figures").glob("*.png")}
    assert run_figures and {f"figures/{name}" for name in run_figures} <= files
    # The scaling constants were measured on the training set and travel with the model.
    prepared = np.load(home / "processed" / "mnist" / "train_pixels.npy", allow_pickle=False)
    assert model.network.config.pixel_mean == pytest.approx(prepared.mean() / 255)
    assert model.network.config.layer_sizes == [784, 32, 10]
    assert len(model.metrics["training"]["history"]) == 2
    card = (version / "README.md").read_text()
    assert "# digitflow MNIST digit classifier, v1" in card and "## Limitations" in card

    run_dir = Path(first["run_dir"])
    for name in ("test_probabilities.npy", "test_predictions.npy", "metrics.json", "history.json"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / CHECKPOINT_FILE).exists()  # the run completed: nothing to resume

    flow_run = UUID(first["flow_run_id"])
    evaluation = Artifact.get("mnist-evaluation")
    assert evaluation.flow_run_id == flow_run and evaluation.type == "markdown"
    assert "Confusion matrix" in evaluation.data
    per_class = Artifact.get("mnist-evaluation-per-class")
    assert per_class.type == "table" and len(json.loads(per_class.data)) == 10
    link = Artifact.get("mnist-model")  # Prefect stores a link artifact as "[text](url)"
    assert link.flow_run_id == flow_run
    assert f"({version.resolve().as_uri()})" in link.data

    second = run_flow(small_mnist_dir)
    assert second["download_cached"] and second["prepare_cached"]
    assert second["version"] == "v2" and list_versions(str(home / "models")) == ["v1", "v2"]
    assert (home / "models" / "latest").read_text().strip() == "v2"
    # Same data, same seed: the same weights.
    again = load_published(str(home / "models"))
    for name, value in model.network.params.items():
        np.testing.assert_array_equal(again.network.params[name], value)

    # A raw file damaged after the run is not trusted: it is downloaded again. And a model below
    # the accuracy gate is not published.
    raw_test = home / "raw" / "mnist" / "test.parquet"
    pq.write_table(pq.read_table(raw_test).slice(0, 10), raw_test)
    third = run_flow(small_mnist_dir, min_accuracy=0.999)
    assert not third["download_cached"] and pq.read_metadata(raw_test).num_rows == 500
    assert third["test_accuracy"] < 0.999
    assert third["published"] is False and third["version"] is None and third["artifact"] is None
    assert list_versions(str(home / "models")) == ["v1", "v2"]


def test_rerun_after_a_crash_resumes_from_the_checkpoint(
    prefect_harness, small_mnist_dir: Path, home: Path
) -> None:
    reference = run_flow(small_mnist_dir)
    run_dir = Path(reference["run_dir"])
    # Reproduce the state a crash in epoch 2 leaves behind: the checkpoint after epoch 1.
    network_config, training = load_config(run_dir / "model" / "config.json")
    assert training == TrainConfig(epochs=2, seed=0)
    pixels = np.load(home / "processed" / "mnist" / "train_pixels.npy", allow_pickle=False)
    labels = np.load(home / "processed" / "mnist" / "train_labels.npy", allow_pickle=False)

    def crash(stats) -> None:
        raise KeyboardInterrupt(f"killed after epoch {stats.epoch}")

    network = Network(network_config, np.random.default_rng(training.seed))
    with pytest.raises(KeyboardInterrupt):
        train(network, pixels, labels, training, crash, checkpoint_path=run_dir / CHECKPOINT_FILE)

    resumed = run_flow(small_mnist_dir)
    assert resumed["resumed_from_epoch"] == 1 and resumed["epochs"] == 2
    assert resumed["run_dir"] == str(run_dir)
    assert not (run_dir / CHECKPOINT_FILE).exists()
    uninterrupted = load_published(f"{home / 'models'}@v1").network
    for name, value in load_published(f"{home / 'models'}@v2").network.params.items():
        np.testing.assert_array_equal(value, uninterrupted.params[name])


def test_scheduled_runs_skip_when_nothing_changed_and_production_moves_by_the_rule(
    prefect_harness, small_mnist_dir: Path, home: Path
) -> None:
    from prefect.artifacts import Artifact

    registry = str(home / "models")
    first = run_flow(small_mnist_dir)
    assert first["promoted"] and first["champion"] is None and first["p_value"] is None
    assert read_history(registry).holder("production") == "v1"
    first_card = (home / "models" / "v1" / "README.md").read_text()
    assert "no production version to compare with" in first_card

    # A scheduled run with the same data and configuration as production learns nothing new.
    skipped = run_flow(small_mnist_dir, skip_unchanged=True)
    assert skipped["skipped"] and not skipped["published"] and skipped["version"] is None
    assert skipped["champion"] == "v1"
    assert "nothing new to learn, production v1" in skipped["skipped_because"]
    artifact = Artifact.get("mnist-training-skipped")
    assert str(artifact.flow_run_id) == skipped["flow_run_id"]
    assert "production v1 was trained on the same data" in artifact.data
    assert list_versions(registry) == ["v1"]

    # Forced (skip_unchanged off, as `serve --force` and `digitflow train` do): the same weights,
    # no significant difference (p = 1), so if-not-worse promotes it.
    forced = run_flow(small_mnist_dir)
    assert forced["version"] == "v2" and forced["promoted"]
    assert (forced["champion"], forced["p_value"], forced["accuracy_delta"]) == ("v1", 1.0, 0.0)
    comparison = Artifact.get("mnist-champion-challenger")
    assert str(comparison.flow_run_id) == forced["flow_run_id"]
    assert "This run against production v1" in comparison.data

    # --promote never publishes without moving production; a scheduled rerun of that
    # configuration matches latest (not production) and skips too.
    never = run_flow(small_mnist_dir, training={"epochs": 1, "seed": 0}, promote="never")
    assert never["version"] == "v3" and not never["promoted"]
    assert never["promotion"].startswith("production stays v2 (--promote never")
    again = run_flow(
        small_mnist_dir, training={"epochs": 1, "seed": 0}, promote="never", skip_unchanged=True
    )
    assert again["skipped"] and "latest v3" in again["skipped_because"]
    history = read_history(registry)
    assert [(e["from"], e["to"]) for e in history.entries] == [(None, "v1"), ("v1", "v2")]
    assert history.entries[1]["by"] == f"flow-run:{forced['flow_run_id']}"
    assert load_published(registry).version == "v2"  # production
