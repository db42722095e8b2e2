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
