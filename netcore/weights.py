"""Model files: `model.safetensors` (one named tensor per parameter) + `config.json`.

    save_model(network, "out/", training_config)
    network = load_model("out/")

Loading checks every tensor's name, shape and dtype against the config (MLP or layer specs, see
NetworkConfig) and that every value is finite, and refuses anything else with a ModelFileError
naming the file. safetensors holds raw arrays only: nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from netcore.config import TrainConfig, load_config, save_config
from netcore.errors import ModelFileError
from netcore.io import write_atomic
from netcore.network import Network, param_shapes

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_model(
    network: Network, directory: str | Path, training: TrainConfig | None = None
) -> None:
    """Write the weights and the configs into `directory` (created if needed), each atomically."""
    directory = Path(directory)
    tensors = {name: np.ascontiguousarray(p) for name, p in network.params.items()}
    # The MLP form keeps the tag it always had (its files stay byte-identical); any network
    # described by layer specs is "netcore-layers". Loading goes by config.json, not this tag.
    form = "netcore-mlp" if network.config.layers is None else "netcore-layers"
    # Serialized here, written by netcore.io (see netcore.checkpoint for why).
    data = save(tensors, metadata={"format": form})
    write_atomic(directory / WEIGHTS_FILE, lambda temporary: temporary.write_bytes(data))
    save_config(directory / CONFIG_FILE, network.config, training)


def load_model(directory: str | Path) -> Network:
    """Read a model written by `save_model`, verifying the tensors against the config."""
    directory = Path(directory)
    config, _ = load_config(directory / CONFIG_FILE)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ModelFileError(weights_path, "weights file not found")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(weights_path, f"not a readable safetensors file ({error})") from None

    expected = param_shapes(config)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            weights_path,
            f"tensors do not match config.json (missing: {missing or 'none'}, "
            f"unexpected: {unexpected or 'none'})",
        )
    dtypes = {t.dtype for t in tensors.values()}
    for name, shape in expected.items():
        if tensors[name].shape != shape:
            raise ModelFileError(
                weights_path, f"tensor {name} has shape {tensors[name].shape}, config says {shape}"
            )
    if len(dtypes) != 1 or next(iter(dtypes)) not in (np.float32, np.float64):
        raise ModelFileError(weights_path, f"tensors must share one float dtype, got {dtypes}")
    for name, tensor in tensors.items():
        if not np.all(np.isfinite(tensor)):
            raise ModelFileError(weights_path, f"tensor {name} holds NaN or infinite values")
    params = {name: np.array(tensors[name]) for name in expected}
    return Network(config, dtype=next(iter(dtypes)).type, params=params)
