"""A classifier composed of layers (netcore.layers): forward, hand-written backward, predict.

The default is the fully connected network (MLP). For layers l = 1..L with weights W_l
`(fan_in, fan_out)` and biases b_l `(fan_out,)`:

    forward                       backward (g_L = dLoss/dz_L from the loss, e.g. (p - y) / B)
    a_0 = x          (batch, 784)
    z_l = a_{l-1} W_l + b_l       dW_l = a_{l-1}^T g_l        db_l = sum_over_batch(g_l)
    a_l = f(z_l)   (l < L)        g_{l-1} = (g_l W_l^T) * f'(z_{l-1})
    logits = z_L  (batch, 10)

Any other network (a CNN) is a list of layer specs in its NetworkConfig; every layer has its own
forward and backward (netcore.layers), and the network runs them in order, then in reverse.
Inputs always arrive flat, `(batch, 784)`; a CNN views them as images `(batch, 28, 28, 1)`.

Weights start He-initialised, W ~ N(0, 2 / fan_in) (fan_in = k k C for a k x k convolution over
C channels), biases at zero, drawn layer by layer from an explicit `np.random.Generator`.
Everything is float32 unless a float64 network is asked for (the gradient checks do). Run
`python -m netcore.network` for a tiny smoke test.

All parameters live in one contiguous vector (`flat_params`, every weight first, then every
bias) and `params[name]` are views into it, named `layers.<k>.weight` / `layers.<k>.bias` for the
k-th layer with parameters; gradients likewise (`flat_grads`). The optimizer then updates
everything in a handful of vectorised passes instead of several small ones per parameter, which
matters at batch 128, where an MLP step takes well under a millisecond, and weight decay applies
to a prefix of the vector.
"""

from __future__ import annotations

import math

import numpy as np

from netcore.config import NetworkConfig
from netcore.layers import Conv2D, Layer, build_layers
from netcore.losses import get_loss, softmax

# Largest intermediate array (bytes) a prediction batch may need: a CNN's im2col matrices grow
# with the batch (about 0.6 MB per image for a 5x5x16 -> 32 convolution at 14x14), so
# predict_proba cuts big batches to fit; the MLP's batches stay as asked.
PREDICT_BYTES = 256 * 2**20
# For a network with convolutions, much less: each layer writes and rereads its im2col matrix,
# which is fastest while it stays in the CPU's cache. The CNN recipe predicts in 54 us an image
# in batches of 16-24 (its largest array about 0.1 MB an image) against 85 us in batches of 500
# (one thread; docs/benchmarks.md, "The CNN").
CONV_PREDICT_BYTES = 2 * 2**20


def build(config: NetworkConfig, dtype: type = np.float32) -> list[Layer]:
    """The network's layers, in order."""
    return build_layers(config.layer_specs(), config.example_shape, dtype)


def param_shapes(config: NetworkConfig) -> dict[str, tuple[int, ...]]:
    """Shape of each named parameter, in storage order: every layer's weight, then every bias."""
    parametric = [layer for layer in build(config) if layer.param_shapes]
    shapes: dict[str, tuple[int, ...]] = {}
    for kind in ("weight", "bias"):
        for k, layer in enumerate(parametric):
            shapes[f"layers.{k}.{kind}"] = layer.param_shapes[kind]
    return shapes


def bind_layers(
    layers: list[Layer], params: dict[str, np.ndarray], grads: dict[str, np.ndarray]
) -> None:
    """Point the k-th layer with parameters at `params` / `grads` "layers.<k>.weight" etc."""
    parametric = [layer for layer in layers if layer.param_shapes]
    for k, layer in enumerate(parametric):
        names = {kind: f"layers.{k}.{kind}" for kind in layer.param_shapes}
        layer.bind(
            {kind: params[name] for kind, name in names.items()},
            {kind: grads[name] for kind, name in names.items()},
        )


def forward_layers(
    layers: list[Layer], x: np.ndarray, rng: np.random.Generator | None
) -> tuple[np.ndarray, list]:
    """Run `layers` in order on x (already shaped as the first layer wants); returns the output
    and each layer's cache."""
    caches = []
    for layer in layers:
        x, cache = layer.forward(x, rng)
        caches.append(cache)
    return x, caches


def backward_layers(layers: list[Layer], caches: list, grad_output: np.ndarray) -> None:
    """Run `layers` in reverse from dLoss/doutput; parameter gradients land in their grads."""
    g = grad_output
    for index in reversed(range(len(layers))):
        # The first layer's input is the data: it needs no gradient.
        g = layers[index].backward(caches[index], g, need_input_grad=index > 0)


def named_views(flat: np.ndarray, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Named views into consecutive slices of `flat`."""
    views, offset = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        views[name] = flat[offset : offset + size].reshape(shape)
        offset += size
    return views


class Network:
    """A classifier from its config's layers. `params` maps names to arrays; `weights` / `biases`
    list them per layer with parameters (`weights[0]` is the first layer's, e.g. the
    784x128 matrix of the MLP or the 5x5x1x16 filters of the CNN).

    Gradients from `backward` are views into `flat_grads`, overwritten by the next call. Layers
    reuse buffers between batches, so one Network must not run in two threads at once."""

    def __init__(
        self,
        config: NetworkConfig | None = None,
        rng: np.random.Generator | None = None,
        dtype: type = np.float32,
        params: dict[str, np.ndarray] | None = None,
    ):
        self.config = config or NetworkConfig()
        self.loss = get_loss(self.config.loss)
        self.dtype = np.dtype(dtype)
        self.layers = build(self.config, self.dtype)
        self.example_shape = self.config.example_shape
        self.num_classes = self.layers[-1].output_shape[0]
        shapes = param_shapes(self.config)
        parametric = [layer for layer in self.layers if layer.param_shapes]
        self.num_layers = len(parametric)  # layers with parameters
        self.num_weight_values = sum(math.prod(s) for n, s in shapes.items() if "weight" in n)
        total = sum(math.prod(s) for s in shapes.values())
        self.flat_params = np.zeros(total, dtype=self.dtype)
        self.flat_grads = np.zeros(total, dtype=self.dtype)
        self.params = named_views(self.flat_params, shapes)
        self.grads = named_views(self.flat_grads, shapes)
        bind_layers(self.layers, self.params, self.grads)
        if params is not None:
            for name, value in params.items():
                self.params[name][...] = value
        else:
            self._he_init(rng or np.random.default_rng(0))
        self.weights = [self.params[f"layers.{k}.weight"] for k in range(self.num_layers)]
        self.biases = [self.params[f"layers.{k}.bias"] for k in range(self.num_layers)]
        largest = max(layer.values_per_example() for layer in self.layers)
        convolutional = any(isinstance(layer, Conv2D) for layer in self.layers)
        budget = CONV_PREDICT_BYTES if convolutional else PREDICT_BYTES
        self.predict_batch = max(1, budget // (largest * self.dtype.itemsize))

    def _he_init(self, rng: np.random.Generator) -> None:
        """W ~ N(0, 2 / fan_in), so ReLU layers keep the activations' variance; biases stay 0.
        fan_in is every input a weight column sees: all but the weight's last axis."""
        for layer in range(self.num_layers):
            weight = self.params[f"layers.{layer}.weight"]
            fan_in = math.prod(weight.shape[:-1])
            weight[...] = rng.standard_normal(weight.shape) * np.sqrt(2.0 / fan_in)

    def forward(
        self, x: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, list]:
        """Logits `(batch, classes)` for inputs `(batch, 784)`, plus what `backward` needs (one
        cache per layer). `rng`: training mode, dropout layers draw their masks from it; without
        it (predicting) dropout does nothing."""
        return forward_layers(self.layers, x.reshape(len(x), *self.example_shape), rng)

    def backward(self, caches: list, grad_logits: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients of the loss for every parameter, given dLoss/dlogits `(batch, classes)`."""
        backward_layers(self.layers, caches, grad_logits)
        return self.grads

    def loss_and_grads(
        self,
        x: np.ndarray,
        labels: np.ndarray,
        label_smoothing: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
        """One forward and backward pass: (mean loss, gradients, logits). `rng` as in forward."""
        logits, caches = self.forward(x, rng)
        loss, grad_logits = self.loss(logits, labels, label_smoothing)
        return loss, self.backward(caches, grad_logits), logits

    def logits(self, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Logits `(n, classes)` for inputs `(n, 784)`, predicting: each layer's `predict` (its
        forward pass without what backward needs), in batches to bound memory."""
        batch_size = min(batch_size, self.predict_batch)
        out = np.empty((len(x), self.num_classes), dtype=self.dtype)
        for start in range(0, len(x), batch_size):
            h = np.asarray(x[start : start + batch_size], dtype=self.dtype)
            h = h.reshape(len(h), *self.example_shape)
            for layer in self.layers:
                h = layer.predict(h)
            out[start : start + batch_size] = h
        return out

    def predict_proba(self, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Class probabilities `(n, classes)` for inputs `(n, 784)`."""
        return softmax(self.logits(x, batch_size))

    def predict(self, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Predicted class `(n,)` for inputs `(n, 784)`."""
        return self.logits(x, batch_size).argmax(axis=1)


if __name__ == "__main__":
    net = Network(NetworkConfig(layer_sizes=[4, 3, 2]), np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    print("probabilities:\n", net.predict_proba(x))
    loss, grads, _ = net.loss_and_grads(x, np.array([0, 1, 0, 1, 1]))
    print("loss:", loss, "grad shapes:", {k: v.shape for k, v in grads.items()})
    cnn = Network(NetworkConfig.cnn(), np.random.default_rng(0))
    images = np.random.default_rng(1).standard_normal((5, 784)).astype(np.float32)
    print(cnn.config.describe(), "->", cnn.predict(images))
