"""The evaluate stage's logic: a trained network on the test set -> metrics, files, report text.

    metrics, probabilities = evaluate(network, test_pixels, test_labels)
    save_evaluation(run_dir, metrics, probabilities)   # files later stages and pictures read
    evaluation_markdown(metrics), per_class_rows(metrics)  # the Prefect artifacts' content

`metrics` is plain JSON: test accuracy and loss, per-class precision / recall / support, the
confusion matrix (row = true digit, column = predicted) and the most-confused pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flows.files import write_json, write_npy
from flows.markdown import table
from netcore.metrics import accuracy, confusion_matrix, most_confused, precision_recall
from netcore.network import Network
from netcore.preprocess import normalize

PROBABILITIES_FILE = "test_probabilities.npy"
PREDICTIONS_FILE = "test_predictions.npy"
METRICS_FILE = "metrics.json"


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
    """Write metrics.json, test_probabilities.npy and test_predictions.npy into `run_dir`."""
    run_dir = Path(run_dir)
    arrays = {
        PROBABILITIES_FILE: probabilities.astype(np.float32),
        PREDICTIONS_FILE: probabilities.argmax(axis=1).astype(np.int64),
    }
    written = {name: write_npy(run_dir / name, array) for name, array in arrays.items()}
    written[METRICS_FILE] = write_json(run_dir / METRICS_FILE, metrics)
    return written


def per_class_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per digit, rounded for display (the table artifact)."""
    return [
        {
            "digit": row["digit"],
            "precision": round(row["precision"], 4),
            "recall": round(row["recall"], 4),
            "support": row["support"],
        }
        for row in metrics["per_class"]
    ]


def evaluation_markdown(metrics: dict[str, Any], title: str = "MNIST test set") -> str:
    """Accuracy, the confusion matrix and the most-confused pairs as Markdown."""
    confusion = metrics["confusion_matrix"]
    matrix = table(
        ["true \\ predicted", *range(len(confusion))],
        [[f"**{digit}**", *row] for digit, row in enumerate(confusion)],
    )
    pairs = [
        f"- true {p['true']} predicted as {p['predicted']}: {p['count']} times"
        for p in metrics["most_confused"]
    ] or ["- none"]
    return "\n".join(
        [
            f"## {title}",
            "",
            f"**Accuracy {metrics['test_accuracy']:.2%}** on {metrics['test_examples']:,} images "
            f"(mean cross-entropy {metrics['test_loss']:.4f}).",
            "",
            "### Confusion matrix",
            "",
            matrix,
            "",
            "### Most confused pairs",
            "",
            *pairs,
            "",
        ]
    )
