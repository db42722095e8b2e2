"""Weights and config files: exact round trips, and clear refusals of anything else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from netcore import ModelFileError, Network, NetworkConfig, TrainConfig, load_model, save_model
from netcore.config import load_config, save_config


def test_configs_round_trip_exactly(tmp_path):
    network = NetworkConfig(layer_sizes=[784, 64, 32, 10], activation="tanh", pixel_mean=0.2)
    training = TrainConfig(epochs=3, nesterov=True, schedule="step", label_smoothing=0.05)
    save_config(tmp_path / "config.json", network, training)
    assert load_config(tmp_path / "config.json") == (network, training)


def test_model_round_trip_is_exact(tmp_path):
    net = Network(NetworkConfig(layer_sizes=[784, 16, 10]), np.random.default_rng(1))
    save_model(net, tmp_path, TrainConfig(epochs=2))
    loaded = load_model(tmp_path)
    assert loaded.config == net.config
    for name, value in net.params.items():
        assert loaded.params[name].dtype == np.float32
        np.testing.assert_array_equal(loaded.params[name], value)
    x = np.random.default_rng(2).standard_normal((5, 784)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_proba(x), net.predict_proba(x))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    save_model(Network(NetworkConfig(layer_sizes=[784, 8, 10])), tmp_path)
    return tmp_path


def _tensors(model_dir: Path) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in load_model(model_dir).params.items()}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("layers.1.bias"), "missing: \\['layers.1.bias'\\]"),
        (lambda t: t.update(extra=np.zeros(3, np.float32)), "unexpected: \\['extra'\\]"),
        (
            lambda t: t.update({"layers.0.weight": np.zeros((784, 9), np.float32)}),
            "shape \\(784, 9\\), config says \\(784, 8\\)",
        ),
        (
            lambda t: t.update({"layers.0.bias": np.zeros(8, np.int32)}),
            "one float dtype",
        ),
        (
            lambda t: t["layers.0.weight"].__setitem__((0, 0), np.nan),
            "NaN or infinite",
        ),
    ],
)
def test_weights_that_do_not_match_the_config_are_refused(model_dir, change, message):
    tensors = _tensors(model_dir)
    change(tensors)
    save_file(tensors, str(model_dir / "model.safetensors"))
    with pytest.raises(ModelFileError, match=message) as error:
        load_model(model_dir)
    assert str(model_dir / "model.safetensors") in str(error.value)


def test_garbage_weights_and_configs_are_refused_naming_the_file(model_dir):
    (model_dir / "model.safetensors").write_bytes(b"\x00not safetensors at all")
    with pytest.raises(ModelFileError, match=r"model\.safetensors: not a readable safetensors"):
        load_model(model_dir)
    (model_dir / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match=r"config\.json: not a valid model config"):
        load_model(model_dir)
    (model_dir / "config.json").write_text(json.dumps({"network": {"layer_sizes": [784]}}))
    with pytest.raises(ModelFileError, match="layer_sizes"):
        load_model(model_dir)
    (model_dir / "config.json").unlink()
    with pytest.raises(ModelFileError, match="config file not found"):
        load_model(model_dir)


def test_importing_netcore_pulls_in_no_orchestration_or_framework():
    code = (
        "import sys, netcore, netcore.mnist, netcore.trainer;"
        "bad = [m for m in ('prefect', 'datasets', 'torch', 'tensorflow', 'jax', 'sklearn')"
        " if m in sys.modules]; print(bad)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
