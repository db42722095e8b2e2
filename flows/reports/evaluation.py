"""The evaluation as text: the Prefect artifacts of the evaluate stage and the model card's
evaluation section.

    evaluation_markdown(metrics)   # accuracy, confusion matrix, most-confused pairs
    per_class_rows(metrics)        # per-digit precision and recall, for a table artifact

`metrics` is what flows.training.evaluate.evaluate returns (the run folder's metrics.json).
"""

from __future__ import annotations

from typing import Any

from flows.reports.markdown import table


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
