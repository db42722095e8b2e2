"""Learning-rate schedules, by name: the rate for a (fractional) epoch of training.

Every schedule starts with an optional linear warmup from 0 to the peak rate over
`warmup_epochs`, then follows its own shape over the remaining epochs:
- constant: the peak rate throughout;
- step: the peak rate times `step_gamma` every `step_epochs` epochs;
- cosine: from the peak down to 0 along half a cosine wave;
- onecycle: the one-cycle policy (Smith & Topin 2018; PyTorch's OneCycleLR without its
  momentum cycle): the warmup rises along half a cosine from peak / ONECYCLE_DIV instead of
  linearly from 0, then the rate falls to 0 along half a cosine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotations only: netcore.config imports SCHEDULES from here
    from netcore.config import TrainConfig

# The one-cycle warmup starts at peak / ONECYCLE_DIV (PyTorch's default div_factor).
ONECYCLE_DIV = 25.0


def _constant(progress: float, config: TrainConfig) -> float:
    return 1.0


def _step(progress: float, config: TrainConfig) -> float:
    epochs_after_warmup = progress * (config.epochs - config.warmup_epochs)
    return config.step_gamma ** math.floor(epochs_after_warmup / config.step_epochs + 1e-9)


def _cosine(progress: float, config: TrainConfig) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# Each maps progress through the post-warmup phase (0 -> 1) to a multiple of the peak rate.
SCHEDULES: dict[str, Callable[[float, TrainConfig], float]] = {
    "constant": _constant,
    "step": _step,
    "cosine": _cosine,
    "onecycle": _cosine,  # after its warmup, which learning_rate() treats separately
}


def learning_rate(epoch: float, config: TrainConfig) -> float:
    """The learning rate at `epoch` (0 <= epoch <= config.epochs, fractions mid-epoch)."""
    try:
        shape = SCHEDULES[config.schedule]
    except KeyError:
        raise ValueError(
            f"unknown schedule {config.schedule!r}; known: {sorted(SCHEDULES)}"
        ) from None
    warmup = config.warmup_epochs
    if epoch < warmup:
        if config.schedule == "onecycle":
            start = 1 / ONECYCLE_DIV
            rise = 0.5 * (1 - math.cos(math.pi * epoch / warmup))  # 0 -> 1 along half a cosine
            return config.learning_rate * (start + (1 - start) * rise)
        return config.learning_rate * epoch / warmup
    progress = (epoch - warmup) / max(config.epochs - warmup, 1e-12)
    return config.learning_rate * shape(min(progress, 1.0), config)
