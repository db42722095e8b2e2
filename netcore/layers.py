"""Layers with hand-written backward passes: the pieces `netcore.network` composes.

A network is a list of layer specs, plain dicts stored by name in the model's config.json:

    {"type": "conv2d", "filters": 16, "kernel": 5, "padding": "same"}   (or "valid")
    {"type": "maxpool2d"}                                               (2x2 windows, stride 2)
    {"type": "relu"}  {"type": "tanh"}  {"type": "flatten"}
    {"type": "dropout", "rate": 0.25}
    {"type": "dense", "units": 128}

Layers see a batch: images as `(n, height, width, channels)`, channels last, the layout in which
a convolution is one matrix product with no transposes; vectors as `(n, features)`. Shapes
without the `n` (`input_shape`, `output_shape`) are per example. Every layer has

    forward(x, rng) -> (y, cache)       rng: a generator while training (dropout draws from
                                        it), None when predicting
    backward(cache, grad_y, need_input_grad) -> grad_x (or None when not needed)

and a parametric layer writes its parameter gradients into the `grads` views it was bound to
(views into the network's one flat gradient vector). `cache` is what backward needs from the
forward pass; it may live in buffers the layer reuses, so it is valid until the next forward.

Notation: n examples, C input channels, F filters, k x k kernels, H x W input, Ho x Wo output.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from netcore.activations import ACTIVATIONS, get_activation

Shape = tuple[int, ...]


class Buffers:
    """Arrays a layer reuses from batch to batch instead of allocating them every step (for a
    CNN's large im2col matrices a fresh allocation costs page faults on every batch). `get`
    returns the first rows of one allocation, grown when a larger batch asks for more."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: Shape, fill: float | None = None) -> np.ndarray:
        """An array of `shape`: contents undefined, or, with `fill`, that value everywhere when
        it is newly allocated (and whatever the caller left there since, otherwise)."""
        size = math.prod(shape)
        flat = self.arrays.get(name)
        if flat is None or flat.size < size:
            flat = np.empty(size, self.dtype) if fill is None else np.full(size, fill, self.dtype)
            self.arrays[name] = flat
        return flat[:size].reshape(shape)


class Layer:
    """A layer without parameters that keeps the shape; subclasses override what differs."""

    # Local parameter names ("weight", "bias") and shapes, weights first; empty without any.
    param_shapes: dict[str, Shape] = {}  # noqa: RUF012 (read-only, overridden per instance)
    # Its backward needs the very array forward returned (so nothing may overwrite it).
    keeps_output = False
    # forward returns a view of its input (flatten), not a new array.
    returns_view = False

    def __init__(self, input_shape: Shape):
        self.input_shape = input_shape
        self.output_shape = input_shape

    def bind(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Use `params` and `grads` (local name -> view into the network's flat vectors)."""
        self.params, self.grads = params, grads

    def predict(self, x: np.ndarray) -> np.ndarray:
        """y alone, for predicting: the forward pass (no rng: dropout is the identity), without
        keeping what backward needs where that costs (MaxPool2D's masks)."""
        return self.forward(x)[0]

    def flops_per_example(self) -> int:
        """Multiply-adds x 2 of the forward pass (0 for layers that only move or compare)."""
        return 0

    def values_per_example(self) -> int:
        """Size of the largest array the layer makes, per example (it bounds a batch's memory)."""
        return math.prod(self.output_shape)


class Dense(Layer):
    """y = x W + b.   x `(n, fan_in)`, W `(fan_in, units)`, b `(units,)`, y `(n, units)`.

    backward, from g = dLoss/dy:  dW = x^T g,  db = sum over the batch of g,  dx = g W^T."""

    def __init__(self, input_shape: Shape, units: int):
        super().__init__(input_shape)
        if len(input_shape) != 1:
            raise ValueError(
                f"dense needs flat inputs but gets shape {input_shape}; "
                'put {"type": "flatten"} before it'
            )
        self.output_shape = (units,)
        self.param_shapes = {"weight": (input_shape[0], units), "bias": (units,)}

    def forward(
        self, x: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, Any]:
        y = x @ self.params["weight"]
        y += self.params["bias"]
        return y, x

    def backward(
        self, x: np.ndarray, g: np.ndarray, need_input_grad: bool = True
    ) -> np.ndarray | None:
        np.matmul(x.T, g, out=self.grads["weight"])
        np.sum(g, axis=0, out=self.grads["bias"])
        return g @ self.params["weight"].T if need_input_grad else None

    def flops_per_example(self) -> int:
        return 2 * math.prod(self.param_shapes["weight"])


class Conv2D(Layer):
    """Stride-1 convolution (a cross-correlation, as in every framework), as matrix products.

        y[n, r, c, f] = b[f] + sum over i, j < k, ch < C of xp[n, r + i, c + j, ch] W[i, j, ch, f]

    x `(n, H, W, C)`, W `(k, k, C, F)`, b `(F,)`, y `(n, Ho, Wo, F)`; xp is x with p zeros around
    it: p = (k - 1) / 2 for `same` padding (Ho = H), 0 for `valid` (Ho = H - k + 1).

    im2col: row (n, r, c) of the matrix `cols` `(n Ho Wo, k k C)` holds the k x k x C window
    under output pixel (n, r, c), so the whole layer is one product, y = cols W + b with W seen as
    `(k k C, F)`. Backward, from g = dLoss/dy seen as `(n Ho Wo, F)`:
        dW = cols^T g,   db = sum of g over n, r, c,
        dxp[n, r + i, c + j, :] += g[n, r, c, :] W[i, j]^T   for every kernel offset (i, j),
    i.e. dx is the sum over the k x k offsets of one product g W[i, j]^T each, shifted by (i, j)
    (then xp's border is cut off). Loops run over the k^2 offsets, never over pixels or images."""

    def __init__(self, input_shape: Shape, filters: int, kernel: int, padding: str, dtype):
        super().__init__(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"conv2d needs (height, width, channels) inputs, got {input_shape}")
        if padding not in ("same", "valid"):
            raise ValueError(f"conv2d padding must be 'same' or 'valid', got {padding!r}")
        if padding == "same" and kernel % 2 == 0:
            raise ValueError(f"conv2d 'same' padding needs an odd kernel, got {kernel}")
        height, width, channels = input_shape
        if padding == "valid" and kernel > min(height, width):
            raise ValueError(f"conv2d kernel {kernel} is larger than its input {input_shape}")
        self.kernel, self.filters, self.channels = kernel, filters, channels
        self.pad = (kernel - 1) // 2 if padding == "same" else 0
        self.output_shape = (
            height + 2 * self.pad - kernel + 1,
            width + 2 * self.pad - kernel + 1,
            filters,
        )
        self.param_shapes = {"weight": (kernel, kernel, channels, filters), "bias": (filters,)}
        self.buffers = Buffers(np.dtype(dtype))

    def bind(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        super().bind(params, grads)
        rows = self.kernel * self.kernel * self.channels
        self.weight_matrix = params["weight"].reshape(rows, self.filters)  # views, no copies
        self.grad_matrix = grads["weight"].reshape(rows, self.filters)

    def forward(
        self, x: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, Any]:
        n = len(x)
        out_h, out_w, filters = self.output_shape
        cols = self.im2col(self.padded(x))
        y = self.buffers.get("y", (n * out_h * out_w, filters))
        np.matmul(cols, self.weight_matrix, out=y)
        # + b, along whole rows of output pixels (out_w * F values: the bias repeated out_w
        # times): the same sums as per pixel, in fewer and longer passes.
        y_rows = y.reshape(n * out_h, out_w * filters)
        y_rows += np.tile(self.params["bias"], out_w)
        return y.reshape(n, out_h, out_w, filters), cols

    def padded(self, x: np.ndarray) -> np.ndarray:
        """xp: x inside a border of `pad` zeros (x itself for `valid` padding)."""
        if not self.pad:
            return x
        n, (height, width, channels), p = len(x), self.input_shape, self.pad
        # The border is zeroed once, when the buffer is made; only the inside is written here.
        xp = self.buffers.get("xp", (n, height + 2 * p, width + 2 * p, channels), fill=0.0)
        xp[:, p : p + height, p : p + width] = x
        return xp

    def im2col(self, xp: np.ndarray) -> np.ndarray:
        """The `(n Ho Wo, k k C)` matrix of windows, columns ordered (i, j, channel)."""
        n, k = len(xp), self.kernel
        out_h, out_w, _ = self.output_shape
        if self.channels == 1:
            # One channel: window rows would be only k values long in memory, so write the
            # transposed matrix instead, one long shifted copy of the images per offset (i, j),
            # and hand the product its transpose (a view; BLAS reads it as is).
            cols_t = self.buffers.get("cols", (k, k, n, out_h, out_w))
            for i in range(k):
                for j in range(k):
                    cols_t[i, j] = xp[:, i : i + out_h, j : j + out_w, 0]
            return cols_t.reshape(k * k, n * out_h * out_w).T
        # windows[n, r, c, ch, i, j] = xp[n, r + i, c + j, ch]: a view, copied once in (i, j, ch)
        # order, so that every copied run is a whole window row of k * C values.
        windows = sliding_window_view(xp, (k, k), axis=(1, 2))
        cols = self.buffers.get("cols", (n, out_h, out_w, k, k, self.channels))
        np.copyto(cols, windows.transpose(0, 1, 2, 4, 5, 3))
        return cols.reshape(n * out_h * out_w, k * k * self.channels)

    def backward(
        self, cols: np.ndarray, g: np.ndarray, need_input_grad: bool = True
    ) -> np.ndarray | None:
        n, k, p = len(g), self.kernel, self.pad
        out_h, out_w, filters = self.output_shape
        g_rows = g.reshape(n * out_h * out_w, filters)
        np.matmul(cols.T, g_rows, out=self.grad_matrix)
        # db = 1^T g, the sum over every output pixel, as a BLAS product with a vector of ones:
        # numpy's sum down such a tall, narrow array is more than ten times slower.
        ones = self.buffers.get("ones", (len(g_rows),), fill=1.0)
        np.matmul(ones, g_rows, out=self.grads["bias"])
        if not need_input_grad:
            return None
        height, width, channels = self.input_shape
        dxp = self.buffers.get("dxp", (n, height + 2 * p, width + 2 * p, channels))
        dxp[...] = 0
        part = self.buffers.get("part", (n * out_h * out_w, channels))
        weight = self.params["weight"]
        for i in range(k):
            for j in range(k):
                np.matmul(g_rows, weight[i, j].T, out=part)
                dxp[:, i : i + out_h, j : j + out_w] += part.reshape(n, out_h, out_w, channels)
        return dxp[:, p : p + height, p : p + width]

    def flops_per_example(self) -> int:
        out_h, out_w, filters = self.output_shape
        return 2 * out_h * out_w * filters * self.kernel * self.kernel * self.channels

    def values_per_example(self) -> int:
        out_h, out_w, filters = self.output_shape
        return out_h * out_w * max(filters, self.kernel * self.kernel * self.channels)


class MaxPool2D(Layer):
    """The maximum of every 2x2 window, stride 2:  y[n, r, c, ch] = max of x[n, 2r + a, 2c + b, ch]
    over a, b in {0, 1}.  x `(n, H, W, C)`, y `(n, H // 2, W // 2, C)` (an odd last row or column
    is dropped, as in PyTorch).

    Backward: each window's gradient goes to the one input that was its maximum, every other
    input gets 0; on ties (a flat background region gives many) to exactly one of the tied
    inputs, never to several. The maximum is taken in two steps, first between the two rows of
    each window, then between the two columns of the result (a tie keeps the top row, the left
    column), and the winners of both steps are kept as masks."""

    def __init__(self, input_shape: Shape):
        super().__init__(input_shape)
        if len(input_shape) != 3 or min(input_shape[:2]) < 2:
            raise ValueError(f"maxpool2d needs (height, width, channels) >= 2x2, got {input_shape}")
        height, width, channels = input_shape
        self.output_shape = (height // 2, width // 2, channels)

    def forward(
        self, x: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, Any]:
        h, w, _ = self.output_shape
        top, bottom = x[:, 0 : 2 * h : 2, : 2 * w], x[:, 1 : 2 * h : 2, : 2 * w]  # (n, h, 2w, C)
        lower = bottom > top
        rows = np.maximum(top, bottom)
        left, right = rows[:, :, 0::2], rows[:, :, 1::2]  # (n, h, w, C)
        rightward = right > left
        return np.maximum(left, right), (lower, rightward)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The same maxima without the masks, which cost several times the maxima themselves."""
        h, w, _ = self.output_shape
        rows = np.maximum(x[:, 0 : 2 * h : 2, : 2 * w], x[:, 1 : 2 * h : 2, : 2 * w])
        return np.maximum(rows[:, :, 0::2], rows[:, :, 1::2])

    def backward(
        self, masks: tuple, g: np.ndarray, need_input_grad: bool = True
    ) -> np.ndarray | None:
        lower, rightward = masks
        h, w, channels = self.output_shape
        n = len(g)
        g_rows = np.empty((n, h, 2 * w, channels), g.dtype)  # gradient of `rows`
        np.multiply(g, rightward, out=g_rows[:, :, 1::2])
        np.subtract(g, g_rows[:, :, 1::2], out=g_rows[:, :, 0::2])
        height, width, _ = self.input_shape
        odd = height % 2 or width % 2
        dx = (np.zeros if odd else np.empty)((n, height, width, channels), g.dtype)
        bottom, top = dx[:, 1 : 2 * h : 2, : 2 * w], dx[:, 0 : 2 * h : 2, : 2 * w]
        np.multiply(g_rows, lower, out=bottom)
        np.subtract(g_rows, bottom, out=top)
        return dx


class Activation(Layer):
    """An elementwise activation from netcore.activations (relu, tanh): y = f(x), and backward
    dx = dy * f'(x), written in terms of the kept output y.

    It works in place, on x itself, when `in_place` (set by build_layers where x is an array no
    one else needs: not the caller's input, not an output another layer keeps), else on a copy."""

    keeps_output = True

    def __init__(self, input_shape: Shape, name: str):
        super().__init__(input_shape)
        self.activation = get_activation(name)
        self.in_place = False

    def forward(
        self, x: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, Any]:
        y = self.activation.forward(x if self.in_place else x.copy())
        return y, y

    def backward(
        self, y: np.ndarray, g: np.ndarray, need_input_grad: bool = True
    ) -> np.ndarray | None:
        return self.activation.backward(y, g)


class Flatten(Layer):
    """`(n, H, W, C)` -> `(n, H W C)`, a view; backward reshapes back."""

    returns_view = True

    def __init__(self, input_shape: Shape):
        super().__init__(input_shape)
        self.output_shape = (math.prod(input_shape),)

    def forward(
        self, x: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, Any]:
        return x.reshape(len(x), -1), None

    def backward(
        self, cache: None, g: np.ndarray, need_input_grad: bool = True
    ) -> np.ndarray | None:
        return g.reshape(len(g), *self.input_shape)


class Dropout(Layer):
    """While training (an `rng` given), zero each input with probability `rate` and scale the
    rest by 1 / (1 - rate), so that predicting (no rng) is the identity with the same expected
    output. Backward: the same mask and scale on the gradient."""

    def __init__(self, input_shape: Shape, rate: float):
        super().__init__(input_shape)
        if not 0 <= rate < 1:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate

    def forward(
        self, x: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, Any]:
        if rng is None or not self.rate:
            return x, None
        keep = rng.random(x.shape, dtype=x.dtype) >= self.rate
        y = x * keep
        y *= x.dtype.type(1 / (1 - self.rate))
        return y, keep

    def backward(
        self, keep: np.ndarray | None, g: np.ndarray, need_input_grad: bool = True
    ) -> np.ndarray | None:
        if keep is None:
            return g
        g *= keep
        g *= g.dtype.type(1 / (1 - self.rate))
        return g


# Each type: its class and the spec keys it needs besides "type", with their Python types.
LAYER_TYPES: dict[str, tuple[type, dict[str, type]]] = {
    "dense": (Dense, {"units": int}),
    "conv2d": (Conv2D, {"filters": int, "kernel": int, "padding": str}),
    "maxpool2d": (MaxPool2D, {}),
    "flatten": (Flatten, {}),
    "dropout": (Dropout, {"rate": float}),
    **{name: (Activation, {}) for name in ACTIVATIONS},
}


def build_layer(spec: dict[str, Any], input_shape: Shape, dtype: Any = np.float32) -> Layer:
    """The layer a spec describes, for inputs of `input_shape`; a ValueError says what is wrong
    with a spec (unknown type or key, a missing or non-positive size, a shape it cannot take)."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"a layer spec is a dict with a 'type', got {spec!r}")
    kind = spec["type"]
    if kind not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {kind!r}; known: {sorted(LAYER_TYPES)}")
    cls, keys = LAYER_TYPES[kind]
    given = set(spec) - {"type"}
    if given != set(keys):
        unknown, missing = sorted(given - set(keys)), sorted(set(keys) - given)
        raise ValueError(
            f"{kind} layer: unknown keys {unknown or 'none'}, missing keys {missing or 'none'} "
            f"(it takes {sorted(keys) or 'no keys'})"
        )
    for key, expected in keys.items():
        value = spec[key]
        ok = isinstance(value, expected) and not isinstance(value, bool)
        if expected is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise ValueError(f"{kind} layer: {key} must be {expected.__name__}, got {value!r}")
        if expected is int and value < 1:
            raise ValueError(f"{kind} layer: {key} must be positive, got {value}")
    if cls is Conv2D:
        return Conv2D(input_shape, spec["filters"], spec["kernel"], spec["padding"], dtype)
    if cls is Activation:
        return Activation(input_shape, kind)
    return cls(input_shape, **{key: spec[key] for key in keys})


def build_layers(
    specs: list[dict[str, Any]], input_shape: Shape, dtype: Any = np.float32
) -> list[Layer]:
    """Every layer of a network, each fed the previous one's output shape; the last must give a
    vector of class scores. Activations are told whether they may work in place."""
    if not specs:
        raise ValueError("a network needs at least one layer")
    layers, shape = [], tuple(input_shape)
    writable = False  # may the next layer overwrite its input? Not the caller's data.
    for index, spec in enumerate(specs):
        try:
            layer = build_layer(spec, shape, dtype)
        except ValueError as error:
            raise ValueError(f"layer {index}: {error}") from None
        if isinstance(layer, Activation):
            layer.in_place = writable
        if not layer.returns_view:  # a view is as writable as what it views
            writable = not layer.keeps_output
        layers.append(layer)
        shape = layer.output_shape
    if len(shape) != 1:
        raise ValueError(f"the last layer must give a vector of class scores, gives {shape}")
    return layers
