"""Output losses, by name.

A loss maps the network's logits `(batch, classes)` and integer labels `(batch,)` to the mean loss
over the batch and its gradient with respect to the logits. Models store the name in their config.

Softmax + cross-entropy, derived once:
    p = softmax(z),  L = -(1/B) sum_i log p[i, y_i]
    dL/dz = (p - onehot(y)) / B
the "actual - predicted" error of a single-layer perceptron, with the sign flipped. With label
smoothing s the target is t = (1 - s) onehot(y) + s / C, and the gradient is (p - t) / B.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of `(batch, classes)` logits; subtracting the row max keeps exp finite."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0
) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against `labels`.

    Returns (loss, grad_logits `(batch, classes)`, probabilities `(batch, classes)`).
    """
    batch, classes = logits.shape
    probs = softmax(logits)
    rows = np.arange(batch)
    eps = np.finfo(probs.dtype).tiny
    log_p_true = np.log(probs[rows, labels] + eps)
    if label_smoothing:
        mean_log_p = np.log(probs + eps).mean(axis=1)
        loss = -float(((1 - label_smoothing) * log_p_true + label_smoothing * mean_log_p).mean())
        grad = probs - label_smoothing / classes
        grad[rows, labels] -= 1 - label_smoothing
    else:
        loss = -float(log_p_true.mean())
        grad = probs.copy()
        grad[rows, labels] -= 1
    grad /= batch
    return loss, grad, probs


Loss = Callable[[np.ndarray, np.ndarray, float], tuple[float, np.ndarray, np.ndarray]]

LOSSES: dict[str, Loss] = {"softmax_cross_entropy": softmax_cross_entropy}


def get_loss(name: str) -> Loss:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}") from None
