"""Every location digitflow uses under its data directory, as functions read at call time (so a
test or a command that sets DIGITFLOW_HOME later still gets the right place).

    DIGITFLOW_HOME/             data_home(): $DIGITFLOW_HOME, or ./data
      raw/mnist/                raw_dir(): the downloaded Parquet files (download stage)
      processed/mnist/          processed_dir(): pixel and label arrays (prepare stage)
      runs/<key>/               RunFolder.of(key): one training run's files (train, evaluate)
      models/                   default_registry(): the model registry (publish stage)
      predictions/<name>.parquet   default_predictions(input): batch prediction's default output
      prefect-results/          prefect_results_dir(): Prefect's cached task results (JSON)

File names that several packages share (a run folder and a published version both hold
METRICS_FILE and FIGURES_DIR) are defined here too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

METRICS_FILE = "metrics.json"
ONNX_FILE = "model.onnx"  # a version's network for ONNX runtimes
FIGURES_DIR = "figures"
CHECKPOINT_FILE = "checkpoint.safetensors"


def data_home() -> Path:
    """The data directory: $DIGITFLOW_HOME, or ./data."""
    return Path(os.environ.get("DIGITFLOW_HOME") or "data")


def default_registry() -> str:
    """The model registry used when none is given: data_home()/models."""
    return str(data_home() / "models")


def raw_dir() -> Path:
    return data_home().resolve() / "raw" / "mnist"


def processed_dir() -> Path:
    return data_home().resolve() / "processed" / "mnist"


def prefect_results_dir() -> Path:
    return data_home().resolve() / "prefect-results"


def default_predictions(input: str) -> Path:
    """DIGITFLOW_HOME/predictions/<the input folder's name>.parquet"""
    name = input.rstrip("/").rsplit("/", 1)[-1] or "predictions"
    return data_home() / "predictions" / f"{name}.parquet"


@dataclass(frozen=True)
class RunFolder:
    """DIGITFLOW_HOME/runs/<key>/: what one training run writes. The key names the data and the
    whole configuration, so a rerun of the same run finds its checkpoint here."""

    path: Path

    @classmethod
    def of(cls, key: str) -> RunFolder:
        return cls(data_home().resolve() / "runs" / key)

    @property
    def checkpoint(self) -> Path:
        """The training state after the last finished epoch (removed once the run completes)."""
        return self.path / CHECKPOINT_FILE

    @property
    def model(self) -> Path:
        """The trained model: model.safetensors + config.json (netcore.weights)."""
        return self.path / "model"

    @property
    def history(self) -> Path:
        """Per-epoch training statistics, JSON."""
        return self.path / "history.json"

    @property
    def metrics(self) -> Path:
        """The evaluation on the test set, JSON."""
        return self.path / METRICS_FILE

    @property
    def probabilities(self) -> Path:
        """Test-set class probabilities `(n, classes)` float32, .npy."""
        return self.path / "test_probabilities.npy"

    @property
    def predictions(self) -> Path:
        """Test-set predicted classes `(n,)` int64, .npy."""
        return self.path / "test_predictions.npy"

    @property
    def figures(self) -> Path:
        """The pictures of the model and its evaluation (flows.reports.figures)."""
        return self.path / FIGURES_DIR

    @property
    def payload(self) -> Path:
        """The files of the version to publish, assembled by the publish stage."""
        return self.path / "payload"
