"""The hand-written network: gradients against finite differences, one step computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from netcore import Network, NetworkConfig
from netcore.losses import softmax_cross_entropy
from netcore.optim import SGD


def _loss(net: Network, x: np.ndarray, y: np.ndarray, smoothing: float) -> float:
    logits, _ = net.forward(x)
    return softmax_cross_entropy(logits, y, smoothing)[0]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_backward_matches_central_differences_for_every_parameter(activation, smoothing):
    rng = np.random.default_rng(3)
    config = NetworkConfig(layer_sizes=[6, 5, 4, 3], activation=activation)
    net = Network(config, rng, dtype=np.float64)
    for bias in net.biases:  # non-zero biases, so their gradients are exercised too
        bias[...] = rng.standard_normal(bias.shape) * 0.1
    x = rng.standard_normal((7, 6))
    y = rng.integers(0, 3, 7)
    _, grads, _ = net.loss_and_grads(x, y, smoothing)
    analytic = {name: g.copy() for name, g in grads.items()}

    h = 1e-6
    for name, param in net.params.items():
        numeric = np.zeros_like(param)
        for index in np.ndindex(param.shape):
            saved = param[index]
            param[index] = saved + h
            up = _loss(net, x, y, smoothing)
            param[index] = saved - h
            down = _loss(net, x, y, smoothing)
            param[index] = saved
            numeric[index] = (up - down) / (2 * h)
        scale = np.maximum(np.abs(numeric) + np.abs(analytic[name]), 1e-8)
        relative_error = np.max(np.abs(numeric - analytic[name]) / scale)
        assert relative_error < 1e-6, f"{name}: relative error {relative_error:.2e}"


def test_one_forward_backward_update_step_by_hand():
    # 2 inputs -> 2 ReLU hidden -> 2 classes, one example, numbers small enough to do on paper.
    net = Network(NetworkConfig(layer_sizes=[2, 2, 2]), dtype=np.float64)
    net.params["layers.0.weight"][...] = [[1.0, -1.0], [0.5, 2.0]]
    net.params["layers.0.bias"][...] = [0.0, 0.5]
    net.params["layers.1.weight"][...] = [[1.0, 0.0], [0.0, 1.0]]
    net.params["layers.1.bias"][...] = [0.0, 0.0]
    x = np.array([[2.0, 1.0]])
    # z1 = [2*1 + 1*0.5, 2*-1 + 1*2 + 0.5] = [2.5, 0.5]; a1 = relu(z1) = [2.5, 0.5]
    # logits = a1 @ I = [2.5, 0.5]; p = softmax = [e^2/(e^2+1), 1/(e^2+1)]
    p0 = np.exp(2.0) / (np.exp(2.0) + 1.0)
    logits, activations = net.forward(x)
    np.testing.assert_allclose(activations[1], [[2.5, 0.5]])
    np.testing.assert_allclose(logits, [[2.5, 0.5]])

    loss, grads, _ = net.loss_and_grads(x, np.array([1]))
    assert loss == pytest.approx(-np.log(1 - p0))
    # dlogits = p - y = [p0, -p0]  (y = class 1, p1 = 1 - p0)
    d = np.array([p0, -p0])
    np.testing.assert_allclose(grads["layers.1.weight"], np.outer([2.5, 0.5], d))
    np.testing.assert_allclose(grads["layers.1.bias"], d)
    # da1 = d @ W2^T = d; both hidden units active, so dz1 = d
    np.testing.assert_allclose(grads["layers.0.weight"], np.outer([2.0, 1.0], d))
    np.testing.assert_allclose(grads["layers.0.bias"], d)

    # SGD, momentum 0.9 from zero velocity, lr 0.5, weight decay 0.1 on weights only:
    # v = -lr (g + wd w);  w' = w + v
    w1_before = net.params["layers.0.weight"].copy()
    b1_before = net.params["layers.0.bias"].copy()
    g_w1 = np.outer([2.0, 1.0], d)
    SGD(net, momentum=0.9, weight_decay=0.1).step(net.flat_grads, lr=0.5)
    np.testing.assert_allclose(
        net.params["layers.0.weight"], w1_before - 0.5 * (g_w1 + 0.1 * w1_before)
    )
    np.testing.assert_allclose(net.params["layers.0.bias"], b1_before - 0.5 * d)


def test_momentum_accumulates_and_nesterov_looks_ahead():
    net = Network(NetworkConfig(layer_sizes=[1, 1, 1]), dtype=np.float64)
    net.flat_params[...] = 0.0
    for nesterov, expected in ((False, -0.1 - 0.19), (True, -0.19 - (0.9 * 0.19 + 0.1))):
        net.flat_params[...] = 0.0
        opt = SGD(net, momentum=0.9, nesterov=nesterov)
        for _ in range(2):
            opt.step(np.ones_like(net.flat_params), lr=0.1)
        # heavy ball: v1 = -0.1, w1 = -0.1; v2 = -0.19, w2 = -0.29
        # Nesterov:   w1 = 0.9 * -0.1 - 0.1 = -0.19; w2 = w1 + 0.9 * v2 - 0.1 = -0.19 - 0.271
        np.testing.assert_allclose(net.flat_params, expected)


def test_he_initialisation_scale_and_reproducibility():
    a = Network(NetworkConfig(), np.random.default_rng(42))
    b = Network(NetworkConfig(), np.random.default_rng(42))
    assert np.array_equal(a.flat_params, b.flat_params)
    assert a.flat_params.dtype == np.float32
    std = a.params["layers.0.weight"].std()
    assert std == pytest.approx(np.sqrt(2 / 784), rel=0.02)
    assert not a.params["layers.0.bias"].any()


def test_predict_proba_rows_sum_to_one_and_predict_is_argmax():
    net = Network(NetworkConfig(), np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((20000, 784)).astype(np.float32)
    proba = net.predict_proba(x, batch_size=4096)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(net.predict(x, batch_size=3000), proba.argmax(axis=1))


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        Network(NetworkConfig(activation="swish"))
