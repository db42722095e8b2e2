"""A netcore Network as an ONNX model (built with onnx.helper), checked against netcore.

    model = to_onnx(network)                 # onnx.ModelProto
    worst = check_parity(model, network, test_pixels)   # raises if > 1e-5 apart

The graph takes raw uint8 pixels `pixels` (batch, 784), scales them exactly as netcore does
(x = pixel * 1 / (255 std) - mean / std, in float32), runs the layers and returns `logits` and
`probabilities` (softmax), so a consumer needs nothing but the .onnx file. Layer by layer:

    dense          MatMul + Add (the weights as netcore stores them, (fan_in, units))
    relu, tanh     Relu, Tanh
    conv2d         Conv with its bias, `same` padding as explicit pads; the weights transposed
                   from netcore's channels-last (k, k, C, F) to ONNX's (F, C, k, k)
    maxpool2d      MaxPool 2x2, stride 2 (an odd last row or column dropped, as in netcore)
    flatten        Transpose to channels last, then Flatten: the values in netcore's order, so
                   the next dense layer's weights are used as they are
    dropout        nothing (it is the identity when predicting)

ONNX's Conv and MaxPool work on (batch, channels, height, width); images enter that layout
once, from the flat pixels (a Reshape: with one channel, channels-last and channels-first are
the same values in the same order).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


class _Graph:
    """The nodes and initializers of the graph being built, and the name of the current value."""

    def __init__(self, current: str):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.current = current
        self.names = {current}

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes: Any) -> None:
        """Append `op` on the current value (then `inputs`); its output becomes the current one."""
        while output in self.names:  # two ops after the same layer: keep names unique
            output += "_"
        self.names.add(output)
        self.nodes.append(helper.make_node(op, [self.current, *inputs], [output], **attributes))
        self.current = output


def to_onnx(network: Network, name: str | None = None) -> onnx.ModelProto:
    """The network as an ONNX model: uint8 `pixels` (batch, 784) -> `logits`, `probabilities`.
    The graph is named `name`, by default "digitflow-mlp" or "digitflow-cnn"."""
    config = network.config
    dtype = network.dtype.type
    elem = helper.np_dtype_to_tensor_dtype(network.dtype)
    # The same two constants, in the same dtype and order of operations, as netcore.normalize.
    scale = dtype(1.0 / (255.0 * config.pixel_std))
    offset = dtype(-config.pixel_mean / config.pixel_std)
    graph = _Graph("pixels")
    graph.node("Cast", [], "pixels_float", to=elem)
    graph.node("Mul", [graph.constant("scale", np.array(scale, dtype=dtype))], "scaled")
    graph.node("Add", [graph.constant("offset", np.array(offset, dtype=dtype))], "a0")
    if len(config.example_shape) == 3:
        _images_first(graph, config.example_shape)
    parametric = 0  # layers with parameters so far: the k of `layers.<k>.weight`
    specs = config.layer_specs()
    for index, (spec, layer) in enumerate(zip(specs, network.layers, strict=True)):
        kind, last = spec["type"], index == len(specs) - 1
        if layer.param_shapes:
            _parametric_layer(graph, network, kind, layer, parametric, last)
            parametric += 1
        elif kind in ACTIVATION_OPS:
            graph.node(ACTIVATION_OPS[kind], [], f"a{parametric}")
        elif kind == "maxpool2d":
            graph.node("MaxPool", [], f"pool{parametric}", kernel_shape=[2, 2], strides=[2, 2])
        elif kind == "flatten":
            if len(layer.input_shape) == 3:
                if layer.input_shape[2] > 1:  # one channel: the same order either way
                    graph.node("Transpose", [], f"channels_last{parametric}", perm=[0, 2, 3, 1])
                graph.node("Flatten", [], f"flat{parametric}", axis=1)
        elif kind != "dropout":  # dropout: the identity when predicting
            raise OnnxExportError(f"layer type {kind!r} has no ONNX equivalent here")
    graph.node("Softmax", [], "probabilities", axis=1)

    onnx_graph = helper.make_graph(
        graph.nodes,
        name or f"digitflow-{config.arch}",
        inputs=[helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", 784])],
        outputs=[
            helper.make_tensor_value_info("logits", elem, ["batch", config.num_classes]),
            helper.make_tensor_value_info("probabilities", elem, ["batch", config.num_classes]),
        ],
        initializer=graph.initializers,
    )
    model = helper.make_model(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="digitflow",
        doc_string="MNIST digit classifier: uint8 pixels (batch, 784) -> logits, probabilities",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _images_first(graph: _Graph, shape: tuple[int, ...]) -> None:
    """Flat scaled pixels (batch, H W C) as images (batch, C, H, W), as Conv takes them."""
    height, width, channels = shape
    if channels == 1:
        target = np.array([-1, 1, height, width], dtype=np.int64)
        graph.node("Reshape", [graph.constant("image_shape", target)], "images")
        return
    target = np.array([-1, height, width, channels], dtype=np.int64)
    graph.node("Reshape", [graph.constant("image_shape", target)], "images_channels_last")
    graph.node("Transpose", [], "images", perm=[0, 3, 1, 2])


def _parametric_layer(
    graph: _Graph, network: Network, kind: str, layer: Any, k: int, last: bool
) -> None:
    """The k-th layer with parameters: dense or conv2d. The network's last layer's output is
    `logits`."""
    weight, bias = f"layers.{k}.weight", f"layers.{k}.bias"
    output = "logits" if last else f"z{k + 1}"
    values = np.asarray(network.params[weight])
    if kind == "dense":
        graph.node("MatMul", [graph.constant(weight, values)], f"matmul{k + 1}")
        graph.node("Add", [graph.constant(bias, np.asarray(network.params[bias]))], output)
    elif kind == "conv2d":
        filters = np.ascontiguousarray(values.transpose(3, 2, 0, 1))  # (F, C, k, k)
        graph.node(
            "Conv",
            [graph.constant(weight, filters), graph.constant(bias, network.params[bias])],
            output,
            kernel_shape=[layer.kernel, layer.kernel],
            pads=[layer.pad] * 4,
        )
    else:
        raise OnnxExportError(f"layer type {kind!r} has no ONNX equivalent here")


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
