"""The prepare stage's logic: raw Parquet -> flat uint8 pixel and int64 label arrays as .npy.

    prepared = prepare({"train": "data/raw/mnist/train.parquet", "test": ...}, "data/processed")
    pixels, labels = load_split(prepared, "train")   # memory-mapped, never unpickled

Pixels stay uint8, flattened to (n, 784): a quarter of the float32 size, and the network's
scaling (x = (pixel / 255 - mean) / std) happens batch by batch in netcore. The scaling's
constants, the training set's pixel mean and std, are computed here and go into the model's
NetworkConfig, so inference scales exactly as training did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from netcore.errors import DataFileError
from netcore.io import sha256_file, write_npy
from netcore.mnist import read_parquet
from netcore.preprocess import pixel_statistics


def prepare(raw_files: dict[str, str], out_dir: str | Path) -> dict[str, Any]:
    """Decode each split of `raw_files` ({split: parquet path}) into out_dir/{split}_pixels.npy
    and {split}_labels.npy; returns their paths and hashes and the training pixel statistics."""
    files: dict[str, dict[str, str]] = {}
    rows = {}
    statistics = (0.0, 1.0)
    for split, raw in raw_files.items():
        pixels, labels = read_parquet(raw)
        flat = pixels.reshape(len(pixels), -1)
        if split == "train":
            statistics = pixel_statistics(flat)
        rows[split] = len(labels)
        for kind, array in (("pixels", flat), ("labels", labels.astype(np.int64))):
            path = Path(out_dir) / f"{split}_{kind}.npy"
            write_npy(path, array)
            files[f"{split}_{kind}"] = {"path": str(path), "sha256": sha256_file(path)}
    mean, std = statistics
    return {"files": files, "rows": rows, "pixel_mean": mean, "pixel_std": std}


def load_split(prepared: dict[str, Any], split: str) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 (n, 784), labels int64 (n,)) of a prepared split, memory-mapped."""
    arrays = []
    for kind, dtype in (("pixels", np.uint8), ("labels", np.int64)):
        path = prepared["files"][f"{split}_{kind}"]["path"]
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DataFileError(path, f"cannot load as a .npy array ({error})") from None
        if array.dtype != dtype:
            raise DataFileError(path, f"has dtype {array.dtype}, expected {np.dtype(dtype)}")
        arrays.append(array)
    pixels, labels = arrays
    if pixels.ndim != 2 or len(pixels) != len(labels):
        raise DataFileError(
            prepared["files"][f"{split}_pixels"]["path"],
            f"shape {pixels.shape} does not match {len(labels)} labels",
        )
    return pixels, labels
