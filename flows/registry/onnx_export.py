"""A netcore Network as an ONNX model (built with onnx.helper), checked against netcore.

    model = to_onnx(network)                 # onnx.ModelProto
    worst = check_parity(model, network, test_pixels[:1000])   # raises if > 1e-5 apart

The graph takes raw uint8 pixels `pixels` (batch, 784), scales them exactly as netcore does
(x = pixel * 1 / (255 std) - mean / std, in float32), runs the layers (MatMul + Add, then the
hidden activation) and returns `logits` and `probabilities` (softmax), so a consumer needs
nothing but the .onnx file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from netcore.errors import NetcoreError
from netcore.io import write_atomic
from netcore.network import Network
from netcore.preprocess import normalize

OPSET = 17
IR_VERSION = 8  # readable by onnxruntime releases back to 1.14
ACTIVATION_OPS = {"relu": "Relu", "tanh": "Tanh"}
PARITY_TOLERANCE = 1e-5


class OnnxExportError(NetcoreError):
    """The network cannot be expressed in ONNX, or the ONNX model disagrees with netcore."""


def to_onnx(network: Network, name: str = "digitflow-mlp") -> onnx.ModelProto:
    config = network.config
    if config.activation not in ACTIVATION_OPS:
        raise OnnxExportError(f"activation {config.activation!r} has no ONNX equivalent here")
    dtype = network.dtype.type
    elem = helper.np_dtype_to_tensor_dtype(network.dtype)
    # The same two constants, in the same dtype and order of operations, as netcore.normalize.
    scale = dtype(1.0 / (255.0 * config.pixel_std))
    offset = dtype(-config.pixel_mean / config.pixel_std)
    initializers = [
        numpy_helper.from_array(np.array(scale, dtype=dtype), "scale"),
        numpy_helper.from_array(np.array(offset, dtype=dtype), "offset"),
    ]
    nodes = [
        helper.make_node("Cast", ["pixels"], ["pixels_float"], to=elem),
        helper.make_node("Mul", ["pixels_float", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "offset"], ["a0"]),
    ]
    current = "a0"
    for layer in range(network.num_layers):
        weight, bias = f"layers.{layer}.weight", f"layers.{layer}.bias"
        initializers += [
            numpy_helper.from_array(np.asarray(network.params[weight]), weight),
            numpy_helper.from_array(np.asarray(network.params[bias]), bias),
        ]
        last = layer == network.num_layers - 1
        z = "logits" if last else f"z{layer + 1}"
        nodes += [
            helper.make_node("MatMul", [current, weight], [f"matmul{layer + 1}"]),
            helper.make_node("Add", [f"matmul{layer + 1}", bias], [z]),
        ]
        if not last:
            current = f"a{layer + 1}"
            nodes.append(helper.make_node(ACTIVATION_OPS[config.activation], [z], [current]))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))

    graph = helper.make_graph(
        nodes,
        name,
        inputs=[helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", 784])],
        outputs=[
            helper.make_tensor_value_info("logits", elem, ["batch", config.num_classes]),
            helper.make_tensor_value_info("probabilities", elem, ["batch", config.num_classes]),
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="digitflow",
        doc_string="MNIST digit classifier: uint8 pixels (batch, 784) -> logits, probabilities",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def check_parity(
    model: onnx.ModelProto,
    network: Network,
    pixels: np.ndarray,
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """Run `model` with onnxruntime on uint8 `pixels` (n, 784); return the largest absolute
    difference from netcore's probabilities, raising OnnxExportError above `tolerance`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(len(pixels), -1)
    (onnx_probabilities,) = session.run(["probabilities"], {"pixels": pixels})
    expected = network.predict_proba(normalize(pixels, network.config))
    worst = float(np.max(np.abs(onnx_probabilities.astype(np.float64) - expected)))
    if not worst <= tolerance:
        raise OnnxExportError(
            f"the ONNX model's probabilities differ from netcore's by {worst:.3g} "
            f"(tolerance {tolerance:g})"
        )
    return worst


def save_onnx(model: onnx.ModelProto, path: str | Path) -> Path:
    data = model.SerializeToString()
    return write_atomic(path, lambda temporary: temporary.write_bytes(data))
