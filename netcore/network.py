"""A fully connected classifier written out by hand: forward, backward, predict.

For layers l = 1..L with weights W_l `(fan_in, fan_out)` and biases b_l `(fan_out,)`:

    forward                       backward (g_L = dLoss/dz_L from the loss, e.g. (p - y) / B)
    a_0 = x          (batch, 784)
    z_l = a_{l-1} W_l + b_l       dW_l = a_{l-1}^T g_l        db_l = sum_over_batch(g_l)
    a_l = f(z_l)   (l < L)        g_{l-1} = (g_l W_l^T) * f'(z_{l-1})
    logits = z_L  (batch, 10)

Weights start He-initialised, W ~ N(0, 2 / fan_in), biases at zero, drawn from an explicit
`np.random.Generator`. Everything is float32 unless a float64 network is asked for (the gradient
check does). Run `python -m netcore.network` for a tiny smoke test.

All parameters live in one contiguous vector (`flat_params`, weights first, then biases) and
`params[name]` are views into it; gradients likewise (`flat_grads`). The optimizer then updates
everything in a handful of vectorised passes instead of several small ones per parameter, which
matters at batch 128, where a step takes well under a millisecond.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from netcore.activations import get_activation
from netcore.config import NetworkConfig
from netcore.losses import get_loss, softmax


def param_shapes(config: NetworkConfig) -> dict[str, tuple[int, ...]]:
    """Shape of each named parameter, in storage order: every layer's weight, then every bias."""
    pairs = list(enumerate(itertools.pairwise(config.layer_sizes)))
    shapes: dict[str, tuple[int, ...]] = {}
    for layer, (fan_in, fan_out) in pairs:
        shapes[f"layers.{layer}.weight"] = (fan_in, fan_out)
    for layer, (_, fan_out) in pairs:
        shapes[f"layers.{layer}.bias"] = (fan_out,)
    return shapes


def _views(flat: np.ndarray, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Named views into consecutive slices of `flat`."""
    views, offset = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        views[name] = flat[offset : offset + size].reshape(shape)
        offset += size
    return views


class Network:
    """A multilayer perceptron. `params` maps names to arrays; `weights`/`biases` index into it."""

    # Gradients from `backward` are views into `flat_grads`, overwritten by the next call.

    def __init__(
        self,
        config: NetworkConfig | None = None,
        rng: np.random.Generator | None = None,
        dtype: type = np.float32,
        params: dict[str, np.ndarray] | None = None,
    ):
        self.config = config or NetworkConfig()
        self.activation = get_activation(self.config.activation)
        self.loss = get_loss(self.config.loss)
        self.dtype = np.dtype(dtype)
        shapes = param_shapes(self.config)
        self.num_layers = len(self.config.layer_sizes) - 1
        self.num_weight_values = sum(math.prod(s) for n, s in shapes.items() if "weight" in n)
        total = sum(math.prod(s) for s in shapes.values())
        self.flat_params = np.zeros(total, dtype=self.dtype)
        self.flat_grads = np.zeros(total, dtype=self.dtype)
        self.params = _views(self.flat_params, shapes)
        self.grads = _views(self.flat_grads, shapes)
        if params is not None:
            for name, value in params.items():
                self.params[name][...] = value
        else:
            self._he_init(rng or np.random.default_rng(0))
        self.weights = [self.params[f"layers.{i}.weight"] for i in range(self.num_layers)]
        self.biases = [self.params[f"layers.{i}.bias"] for i in range(self.num_layers)]

    def _he_init(self, rng: np.random.Generator) -> None:
        """W ~ N(0, 2 / fan_in), so ReLU layers keep the activations' variance; biases stay 0."""
        for layer in range(self.num_layers):
            weight = self.params[f"layers.{layer}.weight"]
            weight[...] = rng.standard_normal(weight.shape) * np.sqrt(2.0 / weight.shape[0])

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits `(batch, classes)` for inputs `(batch, 784)`, plus the activations a_0..a_{L-1}
        that `backward` needs."""
        activations = [x]
        a = x
        for layer in range(self.num_layers - 1):
            z = a @ self.weights[layer]
            z += self.biases[layer]
            a = self.activation.forward(z)
            activations.append(a)
        logits = a @ self.weights[-1]
        logits += self.biases[-1]
        return logits, activations

    def backward(
        self, activations: list[np.ndarray], grad_logits: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Gradients of the loss for every parameter, given dLoss/dlogits `(batch, classes)`."""
        g = grad_logits
        for layer in reversed(range(self.num_layers)):
            a_prev = activations[layer]
            np.matmul(a_prev.T, g, out=self.grads[f"layers.{layer}.weight"])
            np.sum(g, axis=0, out=self.grads[f"layers.{layer}.bias"])
            if layer > 0:  # the input needs no gradient
                g = self.activation.backward(a_prev, g @ self.weights[layer].T)
        return self.grads

    def loss_and_grads(
        self, x: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0
    ) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
        """One forward and backward pass: (mean loss, gradients, logits)."""
        logits, activations = self.forward(x)
        loss, grad_logits = self.loss(logits, labels, label_smoothing)
        return loss, self.backward(activations, grad_logits), logits

    def predict_proba(self, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Class probabilities `(n, classes)` for inputs `(n, 784)`, in batches to bound memory."""
        out = np.empty((len(x), self.config.num_classes), dtype=self.dtype)
        for start in range(0, len(x), batch_size):
            logits, _ = self.forward(np.asarray(x[start : start + batch_size], dtype=self.dtype))
            out[start : start + batch_size] = softmax(logits)
        return out

    def predict(self, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Predicted class `(n,)` for inputs `(n, 784)`."""
        out = np.empty(len(x), dtype=np.int64)
        for start in range(0, len(x), batch_size):
            logits, _ = self.forward(np.asarray(x[start : start + batch_size], dtype=self.dtype))
            out[start : start + batch_size] = logits.argmax(axis=1)
        return out


if __name__ == "__main__":
    net = Network(NetworkConfig(layer_sizes=[4, 3, 2]), np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    print("probabilities:\n", net.predict_proba(x))
    loss, grads, _ = net.loss_and_grads(x, np.array([0, 1, 0, 1, 1]))
    print("loss:", loss, "grad shapes:", {k: v.shape for k, v in grads.items()})
