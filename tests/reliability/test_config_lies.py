"""Configs that lie: a published version's config.json edited and its manifest re-hashed to match
(tampering the checksums cannot see, as someone editing a registry by hand would do), then given
to the real CLI. Every field is validated on load: each lie is one line naming the file and the
field, never a traceback, never accepted.

The MLP cases edit the reliability suite's reference version (784-32-10); the layer-spec cases a
CNN version (netcore's CNN recipe, untrained). `digitflow models show` loads each; `digitflow
predict` loads a few of them too, and must score nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from flows.registry.versions import publish
from netcore.config import NetworkConfig, TrainConfig
from netcore.network import Network
from netcore.weights import save_model
from tests.reliability.processes import assert_one_line_error, cli_env, digitflow, digitflow_all

NAN, INF = float("nan"), float("inf")
Config = dict[str, Any]
Lie = Callable[[Config], None]  # edits a parsed config.json in place


def network(change: dict[str, Any]) -> Lie:
    return lambda config: config["network"].update(change)


def training(change: dict[str, Any]) -> Lie:
    return lambda config: config["training"].update(change)


def without(field: str) -> Lie:
    return lambda config: config["network"].pop(field)


def layer(index: int, change: dict[str, Any]) -> Lie:
    return lambda config: config["network"]["layers"][index].update(change)


def replace_config(value: Any) -> Lie:
    def lie(config: Config) -> None:
        config.clear()
        config["__list__"] = value  # written as the whole document (see rewrite)

    return lie


def drop_layer(kind: str) -> Lie:
    def lie(config: Config) -> None:
        layers = config["network"]["layers"]
        layers.remove(next(spec for spec in layers if spec["type"] == kind))

    return lie


# name: (lie, what the one-line error must contain besides the file)
MLP_LIES: dict[str, tuple[Lie, tuple[str, ...]]] = {
    "layer sizes as text": (network({"layer_sizes": "784-32-10"}), ("layer_sizes",)),
    "a layer size as text": (network({"layer_sizes": [784, "32", 10]}), ("layer_sizes",)),
    "a fractional layer size": (network({"layer_sizes": [784, 32.5, 10]}), ("layer_sizes",)),
    "a boolean layer size": (network({"layer_sizes": [784, True, 10]}), ("layer_sizes",)),
    "a negative layer size": (network({"layer_sizes": [784, -32, 10]}), ("layer_sizes",)),
    "a zero layer size": (network({"layer_sizes": [784, 0, 10]}), ("layer_sizes",)),
    "a single layer size": (network({"layer_sizes": [784]}), ("layer_sizes",)),
    "activation __import__": (network({"activation": "__import__"}), ("activation",)),
    "activation a number": (network({"activation": 3}), ("activation",)),
    "activation null": (network({"activation": None}), ("missing field(s) activation",)),
    "an unknown loss": (network({"loss": "mse"}), ("loss",)),
    "loss a list": (network({"loss": ["softmax_cross_entropy"]}), ("loss",)),
    "pixel_mean NaN": (network({"pixel_mean": NAN}), ("pixel_mean",)),
    "pixel_mean infinite": (network({"pixel_mean": INF}), ("pixel_mean",)),
    "pixel_mean as text": (network({"pixel_mean": "0.13"}), ("pixel_mean",)),
    "pixel_mean out of range": (network({"pixel_mean": 50}), ("pixel_mean",)),
    "pixel_std NaN": (network({"pixel_std": NAN}), ("pixel_std",)),
    "pixel_std minus infinity": (network({"pixel_std": -INF}), ("pixel_std",)),
    "pixel_std zero": (network({"pixel_std": 0}), ("pixel_std",)),
    "pixel_std negative": (network({"pixel_std": -0.3}), ("pixel_std",)),
    "pixel_std a boolean": (network({"pixel_std": True}), ("pixel_std",)),
    "pixel_std left out": (without("pixel_std"), ("missing field(s) pixel_std",)),
    "an unknown network field": (network({"dropout": 0.5}), ("dropout",)),
    "network not an object": (lambda c: c.update(network=[784, 32, 10]), ("NetworkConfig",)),
    "both forms at once": (network({"layers": [{"type": "flatten"}]}), ("layer_sizes",)),
    "hidden size not the weights'": (
        network({"layer_sizes": [784, 16, 10]}),
        ("model.safetensors", "config says"),
    ),
    "epochs as text": (training({"epochs": "100"}), ("training", "epochs")),
    "learning_rate NaN": (training({"learning_rate": NAN}), ("training", "learning_rate")),
    "momentum above 1": (training({"momentum": 1.5}), ("training", "momentum")),
    "schedule __import__": (training({"schedule": "__import__"}), ("training", "schedule")),
    "seed a fraction": (training({"seed": 0.5}), ("training", "seed")),
    "nesterov as text": (training({"nesterov": "yes"}), ("training", "nesterov")),
    "an unknown training field": (training({"optimizer": "adam"}), ("training", "optimizer")),
    "config a list": (replace_config([1, 2, 3]), ("no 'network' section",)),
}
CNN_LIES: dict[str, tuple[Lie, tuple[str, ...]]] = {
    "filters as text": (layer(0, {"filters": "16"}), ("layer 0", "filters")),
    "a zero kernel": (layer(0, {"kernel": 0}), ("layer 0", "kernel")),
    "an unknown padding": (layer(0, {"padding": "full"}), ("layer 0", "padding")),
    "an unknown layer type": (layer(2, {"type": "lambda"}), ("layer 2", "unknown layer type")),
    "a layer with an extra key": (layer(2, {"alpha": 0.1}), ("layer 2", "alpha")),
    "no flatten": (drop_layer("flatten"), ("layer",)),
    "input_shape of two sides": (network({"input_shape": [28, 28]}), ("input_shape",)),
    "input_shape null": (network({"input_shape": None}), ("missing field(s) input_shape",)),
    "filters not the weights'": (layer(0, {"filters": 8}), ("model.safetensors", "config says")),
}


def writable(path: Path) -> Path:
    path.chmod(0o644)  # published files are read-only
    return path


def rehash(version: Path, *names: str) -> None:
    """Record the files' new sha256 in the manifest, as a careful tamperer would."""
    manifest_path = writable(version / "manifest.json")
    manifest = json.loads(manifest_path.read_text())
    for name in names:
        manifest["files"][name]["sha256"] = hashlib.sha256(
            (version / name).read_bytes()
        ).hexdigest()
    manifest_path.write_text(json.dumps(manifest))


def rewrite(registry: Path, lie: Lie) -> None:
    """Tell the lie in v1's config.json (NaN and infinity as JSON's NaN / Infinity tokens, which
    Python's json module reads), then re-hash the manifest."""
    path = writable(registry / "v1" / "config.json")
    config = json.loads(path.read_text())
    lie(config)
    document = config.get("__list__", config)
    path.write_text(json.dumps(document))
    rehash(registry / "v1", "config.json")


@pytest.fixture(scope="module")
def cnn_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry whose v1 is netcore's CNN recipe (untrained: loading is what is tested)."""
    root = tmp_path_factory.mktemp("cnn-registry")
    payload = root / "payload"
    config = NetworkConfig.cnn()
    save_model(Network(config, np.random.default_rng(0)), payload, TrainConfig.cnn())
    (payload / "metrics.json").write_text(json.dumps({"test_accuracy": 0.1}))
    publish(str(root / "models"), payload, lambda version: {}, {})
    return root / "models"


def copies(source: Path, lies: dict[str, tuple[Lie, tuple[str, ...]]], tmp_path: Path) -> list:
    """A copy of `source` per lie, the lie told; returns [(registry, fragments)]."""
    told = []
    for name, (lie, fragments) in lies.items():
        registry = tmp_path / name.replace(" ", "-").replace("'", "") / "models"
        shutil.copytree(source, registry)
        rewrite(registry, lie)
        told.append((registry, fragments))
    return told


def test_thirty_and_more_lies_are_each_one_line(
    reference: dict[str, Any], cnn_registry: Path, tmp_path: Path
) -> None:
    told = copies(reference["registry"], MLP_LIES, tmp_path / "mlp")
    told += copies(cnn_registry, CNN_LIES, tmp_path / "cnn")
    assert len(told) >= 30
    commands = [["models", "show", "v1", "--registry", str(registry)] for registry, _ in told]
    results = digitflow_all(commands, cli_env(tmp_path / "data", None))
    for (registry, fragments), result in zip(told, results, strict=True):
        line = assert_one_line_error(result, *fragments)
        assert str(registry / "v1") in line, line  # the file is named
        assert "config.json" in line or "model.safetensors" in line, line


def test_an_eleven_class_network_is_no_digit_classifier(
    reference: dict[str, Any], tmp_path: Path
) -> None:
    """A lie told consistently in the config and the weights: the network loads, but cannot be
    what the output's ten probability columns need."""
    registry = tmp_path / "models"
    shutil.copytree(reference["registry"], registry)
    version = registry / "v1"
    tensors = load_file(str(writable(version / "model.safetensors")))
    tensors["layers.1.weight"] = np.concatenate([tensors["layers.1.weight"]] * 2, axis=1)[:, :11]
    tensors["layers.1.bias"] = np.zeros(11, np.float32)
    save_file(tensors, str(version / "model.safetensors"), metadata={"format": "netcore-mlp"})
    rewrite(registry, network({"layer_sizes": [784, 32, 11]}))
    rehash(version, "model.safetensors")
    done = digitflow(
        "models", "show", "v1", "--registry", str(registry), env=cli_env(tmp_path, None)
    )
    assert_one_line_error(done, f"{version}/config.json", "11 classes is no digit classifier")


@pytest.mark.parametrize(
    ("kind", "name"),
    [("mlp", "activation __import__"), ("mlp", "pixel_std NaN"), ("cnn", "filters as text")],
)
def test_predict_refuses_a_lying_config_and_scores_nothing(
    kind: str,
    name: str,
    reference: dict[str, Any],
    cnn_registry: Path,
    digit_folder: Path,
    prefect_api: str,
    tmp_path: Path,
) -> None:
    source, lies = (reference["registry"], MLP_LIES) if kind == "mlp" else (cnn_registry, CNN_LIES)
    ((registry, fragments),) = copies(source, {name: lies[name]}, tmp_path)
    output = tmp_path / "out" / "digits.parquet"
    done = digitflow(
        *("predict", str(digit_folder), "--model", f"{registry}@v1", "--output", str(output)),
        env=cli_env(tmp_path / "data", prefect_api),
    )
    assert_one_line_error(done, f"{registry}/v1/config.json", *fragments)
    assert not output.exists() and not output.with_name(output.name + ".parts").exists()
