"""Classification metrics: accuracy, confusion matrix, per-class precision and recall."""

from __future__ import annotations

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
