"""The layers' hand-written backward passes against central differences (float64), a convolution
and a max-pool worked out by hand, and a small CNN's gradients end to end."""

from __future__ import annotations

import numpy as np
import pytest

from netcore import Network, NetworkConfig
from netcore.layers import Layer, build_layer
from netcore.losses import softmax_cross_entropy
from netcore.parallel import BatchParallel

H = 1e-6  # central-difference step; float64 keeps its rounding error near 1e-10


def _relative_error(numeric: np.ndarray, analytic: np.ndarray) -> float:
    """Worst elementwise |numeric - analytic| / (|numeric| + |analytic|), as in test_network."""
    scale = np.maximum(np.abs(numeric) + np.abs(analytic), 1e-8)
    return float(np.max(np.abs(numeric - analytic) / scale))


def _numeric_gradient(f, array: np.ndarray) -> np.ndarray:
    """d f() / d array by central differences, perturbing `array` in place one value at a time."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + H
        up = f()
        array[index] = saved - H
        down = f()
        array[index] = saved
        grad[index] = (up - down) / (2 * H)
    return grad


def _bound(spec: dict, input_shape: tuple, rng: np.random.Generator) -> Layer:
    """A float64 layer with random parameters (biases too, so their gradients are exercised)."""
    layer = build_layer(spec, input_shape, np.float64)
    params = {name: rng.standard_normal(shape) for name, shape in layer.param_shapes.items()}
    grads = {name: np.zeros(shape) for name, shape in layer.param_shapes.items()}
    layer.bind(params, grads)
    return layer


def _check_layer(spec: dict, input_shape: tuple, seed: int = 0, rng_seed: int | None = None):
    """Loss = sum(forward(x) * R) for a fixed random R, so dLoss/dy = R; every input and
    parameter gradient from backward must match central differences."""
    rng = np.random.default_rng(seed)
    layer = _bound(spec, input_shape, rng)
    x = rng.standard_normal((3, *input_shape))
    weights_of_y = rng.standard_normal((3, *layer.output_shape))

    def loss() -> float:
        # Layers may work in place: give each evaluation its own copy of x, and the same draws.
        train_rng = None if rng_seed is None else np.random.default_rng(rng_seed)
        y, _ = layer.forward(x.copy(), train_rng)
        return float(np.sum(y * weights_of_y))

    train_rng = None if rng_seed is None else np.random.default_rng(rng_seed)
    _, cache = layer.forward(x.copy(), train_rng)
    grad_x = np.array(layer.backward(cache, weights_of_y.copy(), need_input_grad=True))
    errors = {"input": _relative_error(_numeric_gradient(loss, x), grad_x)}
    for name in layer.param_shapes:
        analytic = layer.grads[name].copy()
        errors[name] = _relative_error(_numeric_gradient(loss, layer.params[name]), analytic)
    for name, error in errors.items():
        assert error < 1e-6, f"{spec['type']} {name}: relative error {error:.2e}"
    return errors


def test_dense_gradients():
    _check_layer({"type": "dense", "units": 4}, (5,))


@pytest.mark.parametrize(
    ("padding", "kernel", "input_shape", "filters"),
    [
        ("same", 3, (6, 5, 2), 3),  # several channels: the sliding-window im2col
        ("valid", 3, (6, 5, 2), 3),
        ("same", 5, (6, 6, 1), 2),  # one channel: the shifted-copies im2col
        ("valid", 2, (5, 4, 1), 2),
        ("same", 1, (3, 3, 4), 2),
    ],
)
def test_conv2d_gradients(padding, kernel, input_shape, filters):
    spec = {"type": "conv2d", "filters": filters, "kernel": kernel, "padding": padding}
    _check_layer(spec, input_shape)


@pytest.mark.parametrize("input_shape", [(4, 6, 3), (5, 7, 2)])  # even, and odd (edge dropped)
def test_maxpool2d_gradients(input_shape):
    _check_layer({"type": "maxpool2d"}, input_shape)


@pytest.mark.parametrize("kind", ["relu", "tanh"])
def test_activation_gradients(kind):
    _check_layer({"type": kind}, (4, 3, 2))


def test_flatten_gradients():
    _check_layer({"type": "flatten"}, (3, 2, 4))


def test_dropout_gradients_with_a_fixed_mask_and_identity_when_predicting():
    _check_layer({"type": "dropout", "rate": 0.4}, (12,), rng_seed=5)
    layer = build_layer({"type": "dropout", "rate": 0.4}, (1000,), np.float64)
    x = np.ones((2, 1000))
    y, _ = layer.forward(x.copy(), np.random.default_rng(1))
    assert set(np.unique(y)) == {0.0, 1 / 0.6}
    assert 0.3 < np.mean(y == 0) < 0.5
    predicted, _ = layer.forward(x.copy(), None)
    np.testing.assert_array_equal(predicted, x)


# A 4x4 image, a 3x3 kernel that adds the two first diagonal pixels and subtracts the third:
#     y[r, c] = x[r, c] + x[r+1, c+1] - x[r+2, c+2] + 0.5
IMAGE = [[1, 2, 0, 1], [0, 1, 3, 0], [2, 0, 1, 1], [1, 1, 0, 2]]
KERNEL = [[1, 0, 0], [0, 1, 0], [0, 0, -1]]


def _conv(padding: str, input_shape=(4, 4, 1)) -> Layer:
    layer = build_layer(
        {"type": "conv2d", "filters": 1, "kernel": 3, "padding": padding}, input_shape, np.float64
    )
    weight = np.array(KERNEL, dtype=np.float64).reshape(3, 3, 1, 1)
    layer.bind(
        {"weight": weight, "bias": np.array([0.5])},
        {"weight": np.zeros((3, 3, 1, 1)), "bias": np.zeros(1)},
    )
    return layer


def test_conv_and_pool_by_hand_valid_padding():
    conv, pool = _conv("valid"), build_layer({"type": "maxpool2d"}, (2, 2, 1))
    x = np.array(IMAGE, dtype=np.float64).reshape(1, 4, 4, 1)
    y, conv_cache = conv.forward(x)
    # y[0,0] = 1 + 1 - 1, y[0,1] = 2 + 3 - 1, y[1,0] = 0 + 0 - 0, y[1,1] = 1 + 1 - 2; + 0.5 each
    np.testing.assert_array_equal(y[0, :, :, 0], [[1.5, 4.5], [0.5, 0.5]])
    pooled, pool_cache = pool.forward(y)
    np.testing.assert_array_equal(pooled.ravel(), [4.5])

    # Loss = the pooled value: its gradient reaches only y[0, 1], the window's maximum.
    grad_y = pool.backward(pool_cache, np.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(grad_y[0, :, :, 0], [[0, 1], [0, 0]])
    grad_x = conv.backward(conv_cache, grad_y)
    # dW[i, j] = x[0 + i, 1 + j]: the 3x3 window under y[0, 1]; db = 1
    np.testing.assert_array_equal(
        conv.grads["weight"][:, :, 0, 0], [[2, 0, 1], [1, 3, 0], [0, 1, 1]]
    )
    np.testing.assert_array_equal(conv.grads["bias"], [1.0])
    # dx[0 + i, 1 + j] = W[i, j]: the kernel, placed where y[0, 1] read its window
    np.testing.assert_array_equal(
        grad_x[0, :, :, 0], [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, -1], [0, 0, 0, 0]]
    )


def test_conv_and_pool_by_hand_same_padding():
    conv, pool = _conv("same"), build_layer({"type": "maxpool2d"}, (4, 4, 1))
    x = np.array(IMAGE, dtype=np.float64).reshape(1, 4, 4, 1)
    y, conv_cache = conv.forward(x)
    # Same padding: y[r, c] = x[r-1, c-1] + x[r, c] - x[r+1, c+1] + 0.5, zeros outside the image.
    expected = [
        [0.5, -0.5, 0.5, 1.5],
        [0.5, 1.5, 4.5, 0.5],
        [1.5, 0.5, 0.5, 4.5],
        [1.5, 3.5, 0.5, 3.5],
    ]
    np.testing.assert_array_equal(y[0, :, :, 0], expected)
    pooled, pool_cache = pool.forward(y)
    np.testing.assert_array_equal(pooled[0, :, :, 0], [[1.5, 4.5], [3.5, 4.5]])
    grad_y = pool.backward(pool_cache, np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1))
    # Each window's gradient lands on its maximum: (1,1), (1,2), (3,1), (2,3).
    np.testing.assert_array_equal(
        grad_y[0, :, :, 0], [[0, 0, 0, 0], [0, 1, 2, 0], [0, 0, 0, 4], [0, 3, 0, 0]]
    )
    conv.backward(conv_cache, grad_y)
    assert conv.grads["bias"][0] == 10.0  # the sum of the gradient over the output


def test_maxpool_sends_a_tied_window_gradient_to_one_input_only():
    pool = build_layer({"type": "maxpool2d"}, (2, 2, 1))
    x = np.full((1, 2, 2, 1), 0.25)  # a flat (background) window: four equal maxima
    y, cache = pool.forward(x)
    grad_x = pool.backward(cache, np.ones_like(y))
    assert grad_x.sum() == 1.0 and np.count_nonzero(grad_x) == 1


@pytest.mark.parametrize(
    ("spec", "input_shape"),
    [
        ({"type": "dense", "units": 4}, (5,)),
        ({"type": "conv2d", "filters": 3, "kernel": 3, "padding": "same"}, (6, 5, 2)),
        ({"type": "maxpool2d"}, (5, 7, 2)),
        ({"type": "relu"}, (4, 3, 2)),
        ({"type": "flatten"}, (3, 2, 4)),
        ({"type": "dropout", "rate": 0.4}, (12,)),
    ],
)
def test_predict_is_the_forward_pass_without_its_cache(spec, input_shape):
    rng = np.random.default_rng(3)
    layer = _bound(spec, input_shape, rng)
    # Rounded values: max-pool windows with ties, as a flat background gives.
    x = np.round(rng.standard_normal((4, *input_shape)), 1)
    np.testing.assert_array_equal(layer.predict(x.copy()), layer.forward(x.copy())[0])


def test_network_predicts_with_the_forward_pass_logits():
    config = NetworkConfig(layers=SMALL_CNN, input_shape=[8, 8, 1])
    net = Network(config, np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).random((5, 64))
    logits, _ = net.forward(x)
    np.testing.assert_array_equal(net.logits(x), logits)
    np.testing.assert_array_equal(net.predict(x), logits.argmax(axis=1))


SMALL_CNN = [
    {"type": "conv2d", "filters": 3, "kernel": 3, "padding": "same"},
    {"type": "maxpool2d"},
    {"type": "relu"},
    {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "valid"},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "dense", "units": 6},
    {"type": "tanh"},
    {"type": "dropout", "rate": 0.3},
    {"type": "dense", "units": 3},
]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_small_cnn_gradients_end_to_end(smoothing):
    """Every parameter of a small CNN (both paddings, pool, relu, tanh, dropout with a fixed mask,
    cross-entropy). Through the softmax some gradients are ~1e-6, where the differences' own
    rounding (~1e-10 absolute at this loss) would dominate an elementwise ratio, so each tensor is
    checked as a whole, ||numeric - analytic|| / (||numeric|| + ||analytic||) < 1e-6, and every
    value to 1e-8 absolute."""
    rng = np.random.default_rng(4)
    config = NetworkConfig(layers=SMALL_CNN, input_shape=[8, 8, 1])
    net = Network(config, rng, dtype=np.float64)
    for bias in net.biases:
        bias[...] = rng.standard_normal(bias.shape) * 0.1
    x = rng.standard_normal((5, 64))
    y = rng.integers(0, 3, 5)

    def loss() -> float:  # the same dropout mask every time
        logits, _ = net.forward(x, np.random.default_rng(9))
        return softmax_cross_entropy(logits, y, smoothing)[0]

    _, grads, _ = net.loss_and_grads(x, y, smoothing, rng=np.random.default_rng(9))
    analytic = {name: g.copy() for name, g in grads.items()}
    assert list(analytic) == [
        *(f"layers.{k}.weight" for k in range(4)),
        *(f"layers.{k}.bias" for k in range(4)),
    ]
    for name, param in net.params.items():
        numeric = _numeric_gradient(loss, param)
        difference = np.linalg.norm(numeric - analytic[name])
        error = difference / (np.linalg.norm(numeric) + np.linalg.norm(analytic[name]))
        assert error < 1e-6, f"{name}: relative error {error:.2e}"
        np.testing.assert_allclose(analytic[name], numeric, rtol=0, atol=1e-8, err_msg=name)


def test_float32_cnn_agrees_with_float64():
    config = NetworkConfig(layers=SMALL_CNN, input_shape=[8, 8, 1])
    net64 = Network(config, np.random.default_rng(2), dtype=np.float64)
    net32 = Network(config, dtype=np.float32, params=dict(net64.params))
    x = np.random.default_rng(3).standard_normal((7, 64))
    np.testing.assert_allclose(
        net32.predict_proba(x.astype(np.float32)), net64.predict_proba(x), atol=1e-5
    )


@pytest.mark.parametrize("threads", [2, 3])
def test_batch_split_across_threads_gives_the_whole_batch_gradient(threads):
    config = NetworkConfig(layers=SMALL_CNN, input_shape=[8, 8, 1])
    net = Network(config, np.random.default_rng(0), dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((13, 64))
    y = np.random.default_rng(2).integers(0, 3, 13)
    loss, _, logits = net.loss_and_grads(x, y, 0.1)
    whole = net.flat_grads.copy()
    model = BatchParallel(net, threads)
    try:
        split_loss, grads, split_logits = model.loss_and_grads(x, y, 0.1)
    finally:
        model.close()
    assert grads is net.grads
    assert split_loss == pytest.approx(loss, rel=1e-14)
    np.testing.assert_allclose(net.flat_grads, whole, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(split_logits, logits)
