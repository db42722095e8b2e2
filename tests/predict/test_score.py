"""Scoring with either engine: netcore's forward pass, or onnxruntime on the exported network,
called in batches of ONNX_BATCH images (a CNN runs fastest so); the same probabilities."""

from __future__ import annotations

import numpy as np

from flows.predict.score import ONNX_BATCH, ModelPayload
from flows.registry.onnx_export import to_onnx
from netcore.config import NetworkConfig
from netcore.network import Network


def test_onnx_engine_scores_any_number_of_images_as_netcore_does() -> None:
    network = Network(NetworkConfig.cnn(), np.random.default_rng(0))
    netcore = ModelPayload.of("v1", network)
    onnx = ModelPayload.of("v1", network, onnx=to_onnx(network).SerializeToString())
    pixels = np.random.default_rng(1).integers(0, 256, (2 * ONNX_BATCH + 7, 28, 28), np.uint8)
    assert onnx.predict_proba(pixels[:0]).shape == (0, 10)
    for count in (1, ONNX_BATCH, len(pixels)):
        expected = netcore.predict_proba(pixels[:count])
        found = onnx.predict_proba(pixels[:count])
        assert found.shape == (count, 10) and found.dtype == np.float32
        np.testing.assert_allclose(found, expected, atol=1e-5)
