"""Classification metrics: accuracy, confusion matrix, per-class precision and recall, and the
comparison of two classifiers on the same test set (the exact McNemar test).

    compare_predictions(labels, champion, challenger)   # deltas, agreement, discordant pairs, p
    mcnemar_exact(only_first_right=3, only_second_right=12)   # two-sided p-value
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Fraction of `predictions` equal to `labels` (both `(n,)`)."""
    return float(np.mean(np.asarray(labels) == np.asarray(predictions)))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """`(classes, classes)` counts: row = true class, column = predicted class."""
    flat = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(predictions, np.int64)
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def precision_recall(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision (of those predicted c, how many are c) and recall (of the true c, how
    many were found), each `(classes,)`; 0 where a class was never predicted or never present."""
    correct = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    present = confusion.sum(axis=1)
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    recall = np.divide(correct, present, out=np.zeros_like(correct), where=present > 0)
    return precision, recall


def most_confused(confusion: np.ndarray, top: int = 5) -> list[tuple[int, int, int]]:
    """The `top` off-diagonal cells as (true, predicted, count), largest first."""
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    cells = np.argsort(off, axis=None, kind="stable")[::-1][:top]
    pairs = [(int(c // len(off)), int(c % len(off)), int(off.flat[c])) for c in cells]
    return [p for p in pairs if p[2] > 0]


def mcnemar_exact(only_first_right: int, only_second_right: int) -> float:
    """The exact two-sided McNemar test on the discordant pairs of two classifiers scored on the
    same examples: `only_first_right` examples only the first got right, `only_second_right`
    only the second. If both were equally good, each discordant example would be either kind
    with probability 1/2, so the smaller count follows Binomial(n, 1/2), n the discordant total;
    the p-value is twice its lower tail, at most 1 (1 when n is 0: no evidence either way).

    Examples both got right, or both wrong, say nothing about which is better: a difference of
    0.05 percentage points on 10,000 images is 5 examples, and p says whether that is noise."""
    if only_first_right < 0 or only_second_right < 0:
        raise ValueError("discordant counts cannot be negative")
    discordant = only_first_right + only_second_right
    smaller = min(only_first_right, only_second_right)
    tail = sum(math.comb(discordant, k) for k in range(smaller + 1))
    # Exact integers until the one division (Python divides big integers correctly rounded).
    return min(1.0, 2 * tail / 2**discordant)


def compare_predictions(
    labels: np.ndarray, first: np.ndarray, second: np.ndarray, num_classes: int = 10
) -> dict[str, Any]:
    """How two classifiers' `(n,)` predictions compare on the same labelled examples, as plain
    JSON: each one's accuracy, `accuracy_delta` (second - first), per-class recall and its delta,
    `agreement` (the share of examples where both predict the same class), the discordant
    counts (`only_first_right`, `only_second_right`), the exact McNemar `p_value` on them, and
    `confusion_difference` (second's confusion matrix minus first's; row = true class)."""
    labels = np.asarray(labels, dtype=np.int64)
    first, second = np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)
    if not len(labels) == len(first) == len(second):
        raise ValueError(f"{len(labels)} labels, {len(first)} and {len(second)} predictions")
    first_right, second_right = first == labels, second == labels
    only_first = int(np.count_nonzero(first_right & ~second_right))
    only_second = int(np.count_nonzero(second_right & ~first_right))
    confusions = [confusion_matrix(labels, p, num_classes) for p in (first, second)]
    recalls = [precision_recall(c)[1] for c in confusions]
    first_accuracy, second_accuracy = accuracy(labels, first), accuracy(labels, second)
    return {
        "examples": len(labels),
        "first_accuracy": first_accuracy,
        "second_accuracy": second_accuracy,
        "accuracy_delta": second_accuracy - first_accuracy,
        "agreement": float(np.mean(first == second)) if len(labels) else 1.0,
        "only_first_right": only_first,
        "only_second_right": only_second,
        "p_value": mcnemar_exact(only_first, only_second),
        "per_class": [
            {
                "digit": digit,
                "first_recall": float(recalls[0][digit]),
                "second_recall": float(recalls[1][digit]),
                "recall_delta": float(recalls[1][digit] - recalls[0][digit]),
                "support": int(confusions[0][digit].sum()),
            }
            for digit in range(num_classes)
        ],
        "confusion_difference": (confusions[1] - confusions[0]).tolist(),
    }
