"""Networks from layer specs: validation, the two config forms, sizes, and model files of both
(the MLP's exactly as they were before layer specs existed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from netcore import ModelFileError, Network, NetworkConfig, TrainConfig, load_model, save_model
from netcore.config import load_config, save_config

LENET = [
    {"type": "conv2d", "filters": 16, "kernel": 5, "padding": "same"},
    {"type": "maxpool2d"},
    {"type": "relu"},
    {"type": "conv2d", "filters": 32, "kernel": 5, "padding": "same"},
    {"type": "maxpool2d"},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "dense", "units": 128},
    {"type": "relu"},
    {"type": "dense", "units": 10},
]
CONV = {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"}
HEAD = [{"type": "flatten"}, {"type": "dense", "units": 10}]


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([{"type": "conv3d"}, *HEAD], "layer 0: unknown layer type 'conv3d'"),
        ([{**CONV, "stride": 2}, *HEAD], r"unknown keys \['stride'\], missing keys none"),
        ([{"type": "conv2d", "filters": 4, "kernel": 3}, *HEAD], r"missing keys \['padding'\]"),
        ([{**CONV, "filters": 0}, *HEAD], "filters must be positive, got 0"),
        ([{**CONV, "kernel": -3}, *HEAD], "kernel must be positive"),
        ([{**CONV, "filters": "16"}, *HEAD], "filters must be int"),
        ([{**CONV, "filters": True}, *HEAD], "filters must be int"),
        ([{**CONV, "padding": "full"}, *HEAD], "padding must be 'same' or 'valid'"),
        ([{**CONV, "kernel": 4}, *HEAD], "'same' padding needs an odd kernel"),
        ([CONV, {"type": "dense", "units": 10}], r"layer 1: dense needs flat inputs .*flatten"),
        ([CONV, {"type": "maxpool2d"}], "vector of class scores"),
        ([{**CONV, "padding": "valid", "kernel": 29}, *HEAD], "larger than its input"),
        ([*HEAD, {"type": "maxpool2d"}], "layer 2: maxpool2d needs"),
        ([CONV, {"type": "dropout", "rate": 1.0}, *HEAD], r"dropout rate must be in \[0, 1\)"),
        ([{"type": "dense", "units": 0}], "units must be positive"),
        (["conv2d"], "a layer spec is a dict with a 'type'"),
        ([], "at least one layer"),
    ],
)
def test_bad_layer_specs_are_refused_with_a_clear_message(layers, message):
    with pytest.raises(ValueError, match=message):
        NetworkConfig(layers=layers)


def test_the_two_forms_do_not_mix():
    with pytest.raises(ValueError, match="either layer_sizes"):
        NetworkConfig(layer_sizes=[784, 10], layers=LENET)
    with pytest.raises(ValueError, match="either layer_sizes"):
        NetworkConfig(activation="relu", layers=LENET)
    with pytest.raises(ValueError, match="input_shape belongs to the layers form"):
        NetworkConfig(input_shape=[28, 28, 1])
    with pytest.raises(ValueError, match="input_shape must be"):
        NetworkConfig(layers=LENET, input_shape=[28, 28])


def test_mlp_form_is_the_default_and_keeps_its_dict():
    assert NetworkConfig() == NetworkConfig(layer_sizes=[784, 128, 10], activation="relu")
    assert NetworkConfig.mlp() == NetworkConfig()
    # Exactly the keys, in the order, that config.json always had for the network.
    assert list(NetworkConfig().to_dict()) == [
        "layer_sizes",
        "activation",
        "loss",
        "pixel_mean",
        "pixel_std",
    ]
    cnn = NetworkConfig.cnn(pixel_mean=0.13, pixel_std=0.31)
    assert list(cnn.to_dict()) == ["loss", "pixel_mean", "pixel_std", "layers", "input_shape"]
    assert NetworkConfig.from_dict(cnn.to_dict()) == cnn


def test_describe_parameter_count_and_flops():
    mlp, lenet = NetworkConfig(), NetworkConfig(layers=LENET)
    assert (mlp.arch, lenet.arch) == ("mlp", "cnn")
    assert mlp.describe() == "784-128-10 relu"
    assert lenet.describe() == "conv5x5x16same-pool-conv5x5x32same-pool-dense128-10"
    assert mlp.num_params() == 784 * 128 + 128 + 128 * 10 + 10 == 101_770
    assert lenet.num_params() == (25 * 16 + 16) + (25 * 16 * 32 + 32) + (1568 * 128 + 128) + 1290
    assert mlp.flops_per_image() == 2 * (784 * 128 + 128 * 10)
    # Each convolution: output pixels x filters x (k x k x channels) multiply-adds.
    assert lenet.flops_per_image() == 2 * (
        28 * 28 * 16 * 25 + 14 * 14 * 32 * 25 * 16 + 1568 * 128 + 128 * 10
    )
    assert lenet.num_params() == Network(lenet).flat_params.size


def test_cnn_parameter_names_shapes_and_storage_order():
    net = Network(NetworkConfig(layers=LENET), np.random.default_rng(0))
    assert {name: p.shape for name, p in net.params.items()} == {
        "layers.0.weight": (5, 5, 1, 16),
        "layers.1.weight": (5, 5, 16, 32),
        "layers.2.weight": (1568, 128),
        "layers.3.weight": (128, 10),
        "layers.0.bias": (16,),
        "layers.1.bias": (32,),
        "layers.2.bias": (128,),
        "layers.3.bias": (10,),
    }
    # Weights first: weight decay covers exactly a prefix of the flat vector.
    assert net.num_weight_values == 400 + 12800 + 1568 * 128 + 1280
    assert np.shares_memory(net.weights[0], net.flat_params[:400])
    assert net.weights[0] is net.params["layers.0.weight"]
    # He initialisation over each weight's fan-in (k x k x channels for a convolution).
    assert net.weights[1].std() == pytest.approx(np.sqrt(2 / 400), rel=0.05)
    assert not net.flat_params[net.num_weight_values :].any()


def test_cnn_model_files_round_trip_exactly(tmp_path):
    net = Network(NetworkConfig(layers=LENET, pixel_mean=0.2), np.random.default_rng(1))
    net.biases[0][...] = 0.5
    training = TrainConfig(epochs=2, stroke_width=0.4, schedule="onecycle", warmup_epochs=1)
    save_model(net, tmp_path, training)
    document = json.loads((tmp_path / "config.json").read_text())
    assert document["network"]["layers"] == LENET and "layer_sizes" not in document["network"]
    with safe_open(str(tmp_path / "model.safetensors"), "np") as f:
        assert f.metadata() == {"format": "netcore-layers"}
    assert load_config(tmp_path / "config.json") == (net.config, training)
    loaded = load_model(tmp_path)
    for name, value in net.params.items():
        np.testing.assert_array_equal(loaded.params[name], value)
    x = np.random.default_rng(2).standard_normal((9, 784)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_proba(x), net.predict_proba(x))


def test_a_bad_layer_spec_in_config_json_names_the_file(tmp_path):
    net = Network(NetworkConfig(layers=LENET))
    save_model(net, tmp_path)
    document = json.loads((tmp_path / "config.json").read_text())
    document["network"]["layers"][0]["kernel"] = 0
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ModelFileError, match=r"config\.json: .*kernel must be positive"):
        load_model(tmp_path)


# config.json as every published MLP version before layer specs has it (written by the code at
# 8745ef4), and its safetensors header metadata.
OLD_CONFIG = """{
  "network": {
    "layer_sizes": [
      784,
      8,
      10
    ],
    "activation": "relu",
    "loss": "softmax_cross_entropy",
    "pixel_mean": 0.13066047740240005,
    "pixel_std": 0.3081078038564622
  },
  "training": {
    "epochs": 100,
    "batch_size": 128,
    "learning_rate": 0.1,
    "schedule": "cosine",
    "warmup_epochs": 0.0,
    "step_epochs": 10,
    "step_gamma": 0.1,
    "momentum": 0.9,
    "nesterov": false,
    "weight_decay": 0.0002,
    "label_smoothing": 0.0,
    "augment_shift": 1,
    "augment_distortions": 3,
    "distortion_degrees": 15.0,
    "distortion_scale": 0.15,
    "distortion_shear": 0.3,
    "validation_fraction": 0.0,
    "early_stopping_patience": 0,
    "seed": 0
  }
}
"""


def test_a_model_published_before_layer_specs_loads_and_predicts_identically(tmp_path):
    rng = np.random.default_rng(5)
    tensors = {
        "layers.0.weight": rng.standard_normal((784, 8)).astype(np.float32),
        "layers.1.weight": rng.standard_normal((8, 10)).astype(np.float32),
        "layers.0.bias": rng.standard_normal(8).astype(np.float32),
        "layers.1.bias": rng.standard_normal(10).astype(np.float32),
    }
    (tmp_path / "config.json").write_text(OLD_CONFIG)
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "netcore-mlp"})
    loaded = load_model(tmp_path)
    assert loaded.config.describe() == "784-8-10 relu"
    x = rng.standard_normal((6, 784)).astype(np.float32)
    hidden = np.maximum(x @ tensors["layers.0.weight"] + tensors["layers.0.bias"], 0)
    logits = hidden @ tensors["layers.1.weight"] + tensors["layers.1.bias"]
    np.testing.assert_array_equal(loaded.predict(x), logits.argmax(axis=1))
    np.testing.assert_allclose(loaded.logits(x), logits, rtol=1e-5, atol=1e-5)

    # Saved again, the model writes the same network section and the same safetensors file.
    save_model(loaded, tmp_path / "again")
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["network"] == json.loads(OLD_CONFIG)["network"]
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (
        tmp_path / "model.safetensors"
    ).read_bytes()


def test_old_training_configs_load_with_the_new_fields_off(tmp_path):
    (tmp_path / "config.json").write_text(OLD_CONFIG)
    _, training = load_config(tmp_path / "config.json")
    assert training == TrainConfig(stroke_width=0.0)


@pytest.mark.parametrize("batch_size", [1, 3, 8, 64])
def test_cnn_predictions_do_not_depend_on_the_batch_size(batch_size):
    # The layers reuse buffers sized by the largest batch so far; smaller ones use a prefix.
    net = Network(NetworkConfig(layers=LENET), np.random.default_rng(3))
    x = np.random.default_rng(4).standard_normal((19, 784)).astype(np.float32)
    reference = np.concatenate([net.logits(x[i : i + 1]) for i in range(19)])
    logits = net.logits(x, batch_size=batch_size)
    np.testing.assert_allclose(logits, reference, rtol=1e-5, atol=2e-5)  # float32 rounding
    assert net.logits(x[:5], batch_size=batch_size).shape == (5, 10)


def test_save_config_round_trips_both_forms(tmp_path):
    for network in (NetworkConfig.mlp([64, 32], "tanh"), NetworkConfig.cnn()):
        save_config(tmp_path / "config.json", network, None)
        assert load_config(tmp_path / "config.json") == (network, None)
