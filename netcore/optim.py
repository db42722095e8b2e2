"""Mini-batch SGD with momentum (heavy-ball or Nesterov) and L2 weight decay.

With gradient g, weight decay lambda (weights only, not biases), momentum mu and rate lr:
    g     <- g + lambda * w
    v     <- mu * v - lr * g
    w     <- w + v                      (heavy ball)
    w     <- w + mu * v - lr * g        (Nesterov, in the usual "look-ahead" reformulation)
Updates happen in place, so the network's arrays are the optimizer's arrays.
"""

from __future__ import annotations

import numpy as np


class SGD:
    def __init__(
        self,
        params: dict[str, np.ndarray],
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        self.params = params
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        self.velocity = {name: np.zeros_like(p) for name, p in params.items()}

    def step(self, grads: dict[str, np.ndarray], lr: float) -> None:
        """Apply one update; `grads` are consumed (modified in place)."""
        for name, w in self.params.items():
            g = grads[name]
            if self.weight_decay and name.endswith(".weight"):
                g += self.weight_decay * w
            v = self.velocity[name]
            v *= self.momentum
            g *= lr
            v -= g
            if self.nesterov:
                w -= g
                w += self.momentum * v
            else:
                w += v
