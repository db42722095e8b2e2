"""The evaluate stage's logic: a trained network on the test set -> metrics, files, pictures.

    evaluated = evaluate_run(prepared, trained, RunFolder.of(key))   # all of the below
    metrics, probabilities = evaluate(network, test_pixels, test_labels)
    save_evaluation(run_dir, metrics, probabilities)   # files later stages and pictures read

The report text made from `metrics` (the Prefect artifacts, the model card) is in
flows/reports/evaluation.py, the pictures in flows/reports/figures.py.

`metrics` is plain JSON: test accuracy and loss, per-class precision / recall / support, the
confusion matrix (row = true digit, column = predicted) and the most-confused pairs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flows.paths import RunFolder
from flows.reports.figures import model_figures
from flows.reports.inline import Figure
from flows.training.prepare import load_split
from netcore.io import write_json, write_npy
from netcore.metrics import accuracy, confusion_matrix, most_confused, precision_recall
from netcore.network import Network
from netcore.preprocess import normalize
from netcore.weights import load_model


@dataclass
class Evaluation:
    """What the evaluate stage found and drew."""

    metrics: dict[str, Any]  # as saved in the run folder's metrics.json
    figures: list[Figure]  # the pictures drawn into the run folder

    @property
    def test_accuracy(self) -> float:
        return self.metrics["test_accuracy"]


def evaluate_run(prepared: dict[str, Any], trained: dict[str, Any], run: RunFolder) -> Evaluation:
    """Evaluate the trained model on the prepared test split; save the metrics (with the training
    summary and history) and the test probabilities in the run folder, and draw the pictures."""
    network = load_model(trained["model_dir"])
    pixels, labels = load_split(prepared, "test")
    metrics, probabilities = evaluate(network, pixels, labels)
    metrics["training"] = {
        **{k: v for k, v in trained.items() if k not in ("model_dir", "finished_at")},
        "history": json.loads(run.history.read_text()),
    }
    save_evaluation(run.path, metrics, probabilities)
    history = metrics["training"]["history"]
    drawn = model_figures(run.figures, history, pixels, labels, probabilities, network.weights[0])
    return Evaluation(metrics, drawn)


def evaluate(
    network: Network, pixels: np.ndarray, labels: np.ndarray
) -> tuple[dict[str, Any], np.ndarray]:
    """Metrics of `network` on uint8 `pixels` (n, 784) with `labels`, and the probabilities."""
    probabilities = network.predict_proba(normalize(pixels, network.config))
    predictions = probabilities.argmax(axis=1)
    labels = np.asarray(labels, dtype=np.int64)
    classes = network.config.num_classes
    confusion = confusion_matrix(labels, predictions, classes)
    precision, recall = precision_recall(confusion)
    true_probability = probabilities[np.arange(len(labels)), labels].astype(np.float64)
    metrics = {
        "test_accuracy": accuracy(labels, predictions),
        "test_loss": float(-np.mean(np.log(np.maximum(true_probability, 1e-12)))),
        "test_examples": len(labels),
        "per_class": [
            {
                "digit": digit,
                "precision": float(precision[digit]),
                "recall": float(recall[digit]),
                "support": int(confusion[digit].sum()),
            }
            for digit in range(classes)
        ],
        "confusion_matrix": confusion.tolist(),
        "most_confused": [
            {"true": t, "predicted": p, "count": c} for t, p, c in most_confused(confusion)
        ],
    }
    return metrics, probabilities


def save_evaluation(
    run_dir: str | Path, metrics: dict[str, Any], probabilities: np.ndarray
) -> dict[str, Path]:
    """Write metrics.json, test_probabilities.npy and test_predictions.npy into `run_dir`;
    returns {file name: path}."""
    run = RunFolder(Path(run_dir))
    written = [
        write_npy(run.probabilities, probabilities.astype(np.float32)),
        write_npy(run.predictions, probabilities.argmax(axis=1).astype(np.int64)),
        write_json(run.metrics, metrics),
    ]
    return {path.name: path for path in written}
