"""Mini-batch SGD with momentum (heavy-ball or Nesterov) and L2 weight decay.

With gradient g, weight decay lambda (weights only, not biases), momentum mu and rate lr:
    g <- g + lambda * w
    v <- mu * v - lr * g
    w <- w + v                      (heavy ball)
    w <- w + mu * v - lr * g        (Nesterov, in the usual "look-ahead" reformulation)
The network keeps all parameters in one vector, weights first, so each line above is one or two
vectorised passes over it; updates happen in place.
"""

from __future__ import annotations

import numpy as np

from netcore.network import Network


class SGD:
    def __init__(
        self,
        network: Network,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        self.params = network.flat_params
        self.weights = network.flat_params[: network.num_weight_values]
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        self.velocity = np.zeros_like(self.params)
        self._scratch = np.empty_like(self.weights)

    def step(self, grads: np.ndarray, lr: float) -> None:
        """Apply one update from the flat gradient vector `grads` (consumed: scaled in place)."""
        if self.weight_decay:
            grads[: len(self.weights)] += np.multiply(
                self.weights, self.weight_decay, out=self._scratch
            )
        v = self.velocity
        v *= self.momentum
        grads *= lr
        v -= grads
        if self.nesterov:
            self.params -= grads
            self.params += np.multiply(v, self.momentum, out=grads)
        else:
            self.params += v
