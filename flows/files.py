"""File helpers the stages share: sha256 of a file, atomic writes, and checking recorded hashes.

Every stage writes to a temporary name in the destination folder and renames, so a crash never
leaves a half-written file under its final name.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(document: Any) -> str:
    """sha256 of a JSON-able value, independent of dict order."""
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp_path)`, then rename the temporary file to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | Path, document: Any) -> Path:
    text = json.dumps(document, indent=2) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_npy(path: str | Path, array: np.ndarray) -> Path:
    """Save `array` as .npy (never pickled), atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to the name
            np.save(f, array, allow_pickle=False)

    return write_atomic(path, write)


def files_intact(files: Mapping[str, Mapping[str, Any]]) -> bool:
    """True when every `{"path": ..., "sha256": ...}` entry still names a file with that hash."""
    return all(
        Path(entry["path"]).is_file() and sha256_file(entry["path"]) == entry["sha256"]
        for entry in files.values()
    )
