"""One run of the training flow, in plain Python: what it trains on, where its files go, how long
each stage took, and what it records. flows/training/flow.py runs the stages; this keeps their
bookkeeping out of the flow's body.

    run = TrainingRun.begin(source, revision, registry, min_accuracy, expected_rows, promote)
    with run.stage("download"):
        raw = ...                                   # the stage; its wall time is recorded
    folder = run.configure(prepared, arch, hidden, activation, training)   # the run folder
    provenance = run.provenance(raw, prepared, trained, test_accuracy, flow_run_id, name)
    summary = run.summary(raw, prepared, trained, evaluated, compared, published, folder)
    summary = run.skipped(same, flow_run_id)   # a scheduled run with nothing new to learn

The run folder (DIGITFLOW_HOME/runs/<key>) is named by a hash of the data and the whole
configuration, so a rerun after a crash finds the same folder and resumes from its checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flows.paths import RunFolder, default_registry, processed_dir
from flows.registry.promotion import DEFAULT_POLICY, difference_text
from flows.registry.provenance import git_state, package_versions, utc_now
from flows.reports.comparison import skipped_text
from flows.runtime.api_watch import stop_if_lost
from flows.training.download import FULL_MNIST_ROWS, mnist_source, source_fingerprint
from flows.training.run_config import requested_configs
from flows.training.train import RERUN
from netcore.config import NetworkConfig, TrainConfig
from netcore.io import stable_hash


def preload_libraries() -> None:
    """Import what the stages import on first use (datasets, onnxruntime: seconds). The CLI calls
    this while the embedded Prefect server boots on the other core, when the time is free."""
    import datasets  # noqa: F401
    import onnxruntime  # noqa: F401


def run_key(network_config: NetworkConfig, training: TrainConfig, prepared: dict) -> str:
    """Names the run folder: the same data and configuration resume the same checkpoint."""
    data = {name: f["sha256"] for name, f in prepared["files"].items()}
    return stable_hash(
        {"network": network_config.to_dict(), "training": training.to_dict(), "data": data}
    )[:16]


@dataclass
class TrainingRun:
    source: str  # Hub id, folder or fsspec URL
    revision: str | None  # Hub revision
    registry: str  # where the version is published
    min_accuracy: float  # the publishing gate
    expected_rows: dict[str, int]  # per split; 0 accepts any
    fingerprint: str  # identifies the source's data (netcore hashes, ETags or Hub revision)
    promote: str = DEFAULT_POLICY  # when the new version becomes production (promotion.decide)
    started_at: str = field(default_factory=utc_now)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    cached: dict[str, bool] = field(default_factory=dict)  # stages reused from Prefect's cache
    network: NetworkConfig | None = None  # set by configure()
    training: TrainConfig | None = None  # set by configure()
    flow_run_id: str | None = None  # set by provenance()

    @classmethod
    def begin(
        cls,
        source: str | None,
        revision: str | None,
        registry: str | None,
        min_accuracy: float,
        expected_rows: dict[str, int] | None,
        promote: str = DEFAULT_POLICY,
    ) -> TrainingRun:
        """The run's inputs with their defaults: source $DIGITFLOW_MNIST_SOURCE or ylecun/mnist,
        registry DIGITFLOW_HOME/models, full-MNIST row counts."""
        source = source or mnist_source()
        return cls(
            source=source,
            revision=revision,
            registry=registry or default_registry(),
            min_accuracy=min_accuracy,
            expected_rows=expected_rows or FULL_MNIST_ROWS,
            fingerprint=source_fingerprint(source, revision),
            promote=promote,
        )

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one stage (its wall time, Prefect's task overhead included); it does not start
        if the CLI's Prefect API stopped answering (flows/runtime/api_watch.py)."""
        stop_if_lost(f"stages that finished are kept (reused or resumed): {RERUN}")
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started

    def configure(
        self,
        prepared: dict[str, Any],
        arch: str,
        hidden: list[int] | None,
        activation: str | None,
        training: dict[str, Any] | None,
    ) -> RunFolder:
        """The network and training configurations (the recipe of `arch` with the changes asked
        for, flows/training/run_config.requested_configs, and the input scaling measured by
        prepare), and the run folder they name."""
        self.network, self.training = requested_configs(
            arch, hidden, activation, training, prepared["pixel_mean"], prepared["pixel_std"]
        )
        return RunFolder.of(run_key(self.network, self.training, prepared))

    # What the stages say, one line each, on the terminal and in the Prefect log.

    def download_line(self, raw: dict[str, Any]) -> str:
        rows = ", ".join(f"{f['rows']:,} {split}" for split, f in raw["files"].items())
        done = "reused the cached copy" if self.cached["download"] else "done"
        seconds = self.seconds["download"]
        return f"download: {done} ({rows} rows from {self.source}) in {seconds:.1f} s"

    def prepare_line(self) -> str:
        done = "reused the cached arrays" if self.cached["prepare"] else "done"
        return f"prepare: {done} in {processed_dir()} in {self.seconds['prepare']:.1f} s"

    @staticmethod
    def train_line(trained: dict[str, Any]) -> str:
        return (
            f"train: {trained['epochs']} epochs in {trained['train_seconds']:.1f} s, "
            f"final loss {trained['final_loss']:.4f}"
        )

    @staticmethod
    def evaluate_line(evaluated: dict[str, Any]) -> str:
        return f"evaluate: test accuracy {evaluated['test_accuracy']:.2%}"

    @staticmethod
    def compare_line(compared: dict[str, Any]) -> str:
        comparison = compared["comparison"]
        if comparison is None:
            return f"compare: no production version yet; {compared['reason']}"
        difference = difference_text(comparison["accuracy_delta"], comparison["p_value"])
        decision = "promote" if compared["promote"] else "keep the champion"
        return (
            f"compare: against {compared['champion_alias']} {compared['champion']}: {difference} "
            f"({comparison['agreement']:.2%} agreement); {compared['policy']}: {decision}"
        )

    def publish_line(self, published: dict[str, Any], evaluated: dict[str, Any]) -> str:
        if published["published"]:
            return (
                f"publish: {published['version']} -> {published['location']}; "
                f"{published['promotion']}"
            )
        return (
            f"publish: skipped, test accuracy {evaluated['test_accuracy']:.2%} is below the "
            f"gate {self.min_accuracy:.2%}"
        )

    def skipped(self, same: dict[str, str], flow_run_id: str) -> dict[str, Any]:
        """The summary of a scheduled run stopped because `same` (a version and its alias) was
        trained on the same data with the same configuration."""
        return {
            "skipped": True,
            "skipped_because": skipped_text(same),
            "version": None,
            "published": False,
            "promoted": False,
            "champion": same["version"],
            "p_value": None,
            "accuracy_delta": None,
            "registry": self.registry,
            "flow_run_id": flow_run_id,
        }

    def provenance(
        self,
        raw: dict[str, Any],
        prepared: dict[str, Any],
        trained: dict[str, Any],
        test_accuracy: float,
        flow_run_id: str,
        flow_run_name: str,
    ) -> dict[str, Any]:
        """Where a published version came from (its manifest.json records all of it)."""
        assert self.network is not None and self.training is not None, "configure() first"
        self.flow_run_id = flow_run_id
        return {
            "registry": self.registry,
            "config": {"network": self.network.to_dict(), "training": self.training.to_dict()},
            "data": {
                "source": self.source,
                "revision": self.revision,
                "fingerprint": self.fingerprint,
                "raw": {
                    split: {"sha256": f["sha256"], "rows": f["rows"]}
                    for split, f in raw["files"].items()
                },
                "processed": {name: f["sha256"] for name, f in prepared["files"].items()},
            },
            "test_accuracy": test_accuracy,
            "min_accuracy": self.min_accuracy,
            "git": git_state(),
            "packages": package_versions(),
            "flow_run": {"id": flow_run_id, "name": flow_run_name},
            "timestamps": {
                "flow_started": self.started_at,
                "finished_training": trained["finished_at"],
            },
        }

    def summary(
        self,
        raw: dict[str, Any],
        prepared: dict[str, Any],
        trained: dict[str, Any],
        evaluated: dict[str, Any],
        compared: dict[str, Any],
        published: dict[str, Any],
        folder: RunFolder,
    ) -> dict[str, Any]:
        """What the flow returns (and `digitflow train --json` prints)."""
        cached = self.cached
        comparison = compared["comparison"] or {}
        return {
            "skipped": False,
            "arch": self.network.arch,
            "version": published["version"],
            "published": published["published"],
            "promoted": published["promoted"],
            "promotion": published["promotion"],
            "promote": self.promote,
            "champion": compared["champion"],
            "p_value": comparison.get("p_value"),
            "accuracy_delta": comparison.get("accuracy_delta"),
            "test_accuracy": evaluated["test_accuracy"],
            "min_accuracy": self.min_accuracy,
            "artifact": published["location"],
            "registry": self.registry,
            "train_seconds": trained["train_seconds"],
            "epochs": trained["epochs"],
            "resumed_from_epoch": trained["resumed_from_epoch"],
            "download_cached": cached["download"],
            "prepare_cached": cached["prepare"],
            "stage_seconds": {name: round(value, 3) for name, value in self.seconds.items()},
            "work_seconds": {
                "download": 0.0 if cached["download"] else raw["work_seconds"],
                "prepare": 0.0 if cached["prepare"] else prepared["work_seconds"],
                "train": trained["work_seconds"],
                "evaluate": evaluated["work_seconds"],
                "compare": compared["work_seconds"],
                "publish": published["work_seconds"],
            },
            "run_dir": str(folder.path),
            "flow_run_id": self.flow_run_id,
        }
