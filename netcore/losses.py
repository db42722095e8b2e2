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
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits `(batch, classes)`) against `labels` `(batch,)`.

    Returns (loss, grad_logits `(batch, classes)`). log p comes from the log-sum-exp of the
    max-shifted logits, exact even where p itself would round to 0.
    """
    batch, classes = logits.shape
    rows = np.arange(batch)
    shifted = logits - logits.max(axis=1, keepdims=True)
    grad = np.exp(shifted)
    sums = grad.sum(axis=1, keepdims=True)
    log_sums = np.log(sums[:, 0])
    log_p_true = shifted[rows, labels] - log_sums
    grad /= sums  # now p, the probabilities
    if label_smoothing:
        mean_log_p = shifted.mean(axis=1) - log_sums
        loss = -float(((1 - label_smoothing) * log_p_true + label_smoothing * mean_log_p).mean())
        grad -= label_smoothing / classes
        grad[rows, labels] -= 1 - label_smoothing
    else:
        loss = -float(log_p_true.mean())
        grad[rows, labels] -= 1
    grad /= batch
    return loss, grad


Loss = Callable[[np.ndarray, np.ndarray, float], tuple[float, np.ndarray]]

LOSSES: dict[str, Loss] = {"softmax_cross_entropy": softmax_cross_entropy}


def get_loss(name: str) -> Loss:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}") from None
