"""Training checkpoints: one safetensors file holding everything a resumed run needs.

Tensors: the parameters (`param/<name>`), the momentum vector (`velocity`) and, with early
stopping, the best epoch's parameters (`best/<name>`). The file's metadata holds the training
state as JSON: epochs done, the random generator's exact state, the history so far, and both
configs (a checkpoint from a different configuration is refused). The file is written atomically
(netcore.io), so a crash or a full disk mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from netcore.errors import ModelFileError
from netcore.io import write_atomic


def save_checkpoint(
    path: str | Path,
    params: dict[str, np.ndarray],
    velocity: np.ndarray,
    best: dict[str, np.ndarray] | None,
    state: dict[str, Any],
) -> None:
    tensors = {f"param/{k}": v for k, v in params.items()}
    tensors["velocity"] = velocity
    if best is not None:
        tensors |= {f"best/{k}": v for k, v in best.items()}
    # Serialized here and written by Python: safetensors' own file writer reports a full disk as
    # a SafetensorError without an errno, which netcore.io could not tell from any other failure.
    data = save(tensors, metadata={"state": json.dumps(state)})
    write_atomic(path, lambda temporary: temporary.write_bytes(data))


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns ({"param": {name: array}, "velocity": array, "best": {name: array}}, state)."""
    path = Path(path)
    try:
        tensors = load_file(str(path))
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            metadata = json.loads(f.read(header_len)).get("__metadata__", {})
        state = json.loads(metadata["state"])
    except (SafetensorError, OSError, ValueError, KeyError) as error:
        raise ModelFileError(path, f"not a readable training checkpoint ({error})") from None
    groups: dict[str, Any] = {"param": {}, "velocity": tensors.pop("velocity", None), "best": {}}
    for key, value in tensors.items():
        group, _, name = key.partition("/")
        groups.setdefault(group, {})[name] = value
    if groups["velocity"] is None:
        raise ModelFileError(path, "training checkpoint has no momentum vector")
    return groups, state
