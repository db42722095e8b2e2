"""The ONNX export: a graph built with onnx.helper that matches netcore within 1e-5."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import numpy_helper

from flows.registry.onnx_export import OnnxExportError, check_parity, save_onnx, to_onnx
from netcore import Network, NetworkConfig
from netcore.mnist import read_parquet
from netcore.preprocess import normalize


@pytest.fixture(scope="module")
def test_pixels(small_mnist_dir: Path) -> np.ndarray:
    pixels, _ = read_parquet(small_mnist_dir / "test-00000-of-00001.parquet")
    return pixels.reshape(len(pixels), -1)


@pytest.mark.parametrize(
    ("layers", "activation"),
    [([784, 128, 10], "relu"), ([784, 64, 32, 10], "tanh"), ([784, 10], "relu")],
)
def test_onnx_matches_netcore(tmp_path: Path, test_pixels, layers, activation) -> None:
    config = NetworkConfig(
        layer_sizes=layers, activation=activation, pixel_mean=0.12, pixel_std=0.3
    )
    network = Network(config, np.random.default_rng(len(layers)))
    worst = check_parity(to_onnx(network), network, test_pixels)
    assert worst <= 1e-5

    # The saved file, run as any consumer would: raw uint8 pixels in, logits and probabilities out.
    path = save_onnx(to_onnx(network), tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    logits, probabilities = session.run(["logits", "probabilities"], {"pixels": test_pixels})
    expected_logits, _ = network.forward(normalize(test_pixels, config))
    np.testing.assert_allclose(logits, expected_logits, atol=1e-4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities.argmax(axis=1) == network.predict(normalize(test_pixels, config))).all()


def test_parity_check_catches_a_different_model(test_pixels) -> None:
    network = Network(NetworkConfig(layer_sizes=[784, 32, 10]), np.random.default_rng(0))
    model = to_onnx(network)
    bias = next(t for t in model.graph.initializer if t.name == "layers.1.bias")
    changed = numpy_helper.to_array(bias).copy()
    changed[0] += 0.5
    bias.CopyFrom(numpy_helper.from_array(changed, "layers.1.bias"))
    with pytest.raises(OnnxExportError, match="differ from netcore's by"):
        check_parity(model, network, test_pixels)


def test_graph_uses_standard_operators_only() -> None:
    network = Network(NetworkConfig(layer_sizes=[784, 16, 10]), np.random.default_rng(0))
    model = to_onnx(network)
    onnx.checker.check_model(model, full_check=True)
    ops = {node.op_type for node in model.graph.node}
    assert ops == {"Cast", "Mul", "Add", "MatMul", "Relu", "Softmax"}
    assert {o.domain for o in model.opset_import} == {""}


# ---- convolutional networks ---------------------------------------------------------------

CONV_NETWORKS = {
    "the CNN recipe": NetworkConfig.cnn(pixel_mean=0.12, pixel_std=0.3),
    "same padding, tanh, dropout": NetworkConfig(
        layers=[
            {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"},
            {"type": "tanh"},
            {"type": "maxpool2d"},
            {"type": "dropout", "rate": 0.5},
            {"type": "conv2d", "filters": 6, "kernel": 5, "padding": "valid"},
            {"type": "relu"},
            {"type": "maxpool2d"},
            {"type": "flatten"},
            {"type": "dense", "units": 10},
        ]
    ),
    # Four channels in (the flat pixels read channels last) and an odd size to pool (7 -> 3).
    "multi-channel input, odd pooling": NetworkConfig(
        layers=[
            {"type": "conv2d", "filters": 3, "kernel": 3, "padding": "same"},
            {"type": "maxpool2d"},
            {"type": "relu"},
            {"type": "conv2d", "filters": 5, "kernel": 1, "padding": "valid"},
            {"type": "maxpool2d"},
            {"type": "flatten"},
            {"type": "dense", "units": 16},
            {"type": "relu"},
            {"type": "dense", "units": 10},
        ],
        input_shape=[14, 14, 4],
    ),
}


@pytest.mark.parametrize("described", list(CONV_NETWORKS))
def test_convolutional_onnx_matches_netcore(tmp_path: Path, test_pixels, described: str) -> None:
    config = CONV_NETWORKS[described]
    network = Network(config, np.random.default_rng(7))
    # Scaled-up weights: confident, far-from-uniform probabilities, as a trained network gives.
    network.flat_params *= 3
    assert check_parity(to_onnx(network), network, test_pixels) <= 1e-5

    path = save_onnx(to_onnx(network), tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, probabilities = session.run(["logits", "probabilities"], {"pixels": test_pixels})
    np.testing.assert_allclose(logits, network.logits(normalize(test_pixels, config)), atol=1e-4)
    assert probabilities.max(axis=1).mean() > 0.5  # not the near-uniform output of tiny weights
    assert (probabilities.argmax(axis=1) == network.predict(normalize(test_pixels, config))).all()


def test_cnn_graph_uses_standard_operators_and_onnx_weight_layouts() -> None:
    network = Network(NetworkConfig.cnn(), np.random.default_rng(0))
    model = to_onnx(network)
    assert model.graph.name == "digitflow-cnn"
    assert to_onnx(Network(NetworkConfig(), np.random.default_rng(0))).graph.name == "digitflow-mlp"
    ops = [node.op_type for node in model.graph.node]
    assert ops == [
        "Cast", "Mul", "Add", "Reshape",
        "Conv", "MaxPool", "Relu",
        "Conv", "MaxPool", "Relu",
        "Transpose", "Flatten",
        "MatMul", "Add", "Relu",
        "MatMul", "Add", "Softmax",
    ]  # fmt: skip
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    # Conv filters as ONNX wants them, (F, C, k, k), from netcore's (k, k, C, F).
    np.testing.assert_array_equal(
        weights["layers.1.weight"], network.params["layers.1.weight"].transpose(3, 2, 0, 1)
    )
    # The dense layers' weights exactly as netcore stores them (the Transpose orders the values).
    np.testing.assert_array_equal(weights["layers.2.weight"], network.params["layers.2.weight"])


def test_parity_check_catches_mirrored_filters(test_pixels) -> None:
    network = Network(NetworkConfig.cnn(), np.random.default_rng(0))
    network.flat_params *= 3
    model = to_onnx(network)
    filters = next(t for t in model.graph.initializer if t.name == "layers.0.weight")
    # The kernel's rows and columns swapped: what a wrong transpose of (k, k, C, F) would give.
    swapped = numpy_helper.to_array(filters).transpose(0, 1, 3, 2).copy()
    filters.CopyFrom(numpy_helper.from_array(swapped, "layers.0.weight"))
    with pytest.raises(OnnxExportError, match="differ from netcore's by"):
        check_parity(model, network, test_pixels)
