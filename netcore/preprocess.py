"""Pixel scaling shared by training, evaluation and inference.

Images travel as uint8 pixels (0 = background, 255 = ink, as in MNIST), flattened to
`(n, 784)`; the network sees x = (pixel / 255 - pixel_mean) / pixel_std, with the two constants
stored in the model's NetworkConfig so every caller scales exactly as training did.
"""

from __future__ import annotations

import numpy as np

from netcore.config import NetworkConfig


def pixel_statistics(pixels: np.ndarray) -> tuple[float, float]:
    """Mean and std of `pixels / 255` over a uint8 array, computed in chunks (no float copy)."""
    flat = pixels.reshape(len(pixels), -1)
    total = total_sq = 0.0
    for start in range(0, len(flat), 4096):
        chunk = flat[start : start + 4096].astype(np.float64) / 255.0
        total += chunk.sum()
        total_sq += np.square(chunk).sum()
    count = flat.size
    mean = total / count
    return float(mean), float(np.sqrt(max(total_sq / count - mean * mean, 1e-12)))


def normalize(
    pixels: np.ndarray,
    config: NetworkConfig,
    dtype: type = np.float32,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 pixels `(n, 28, 28)` or `(n, 784)` -> network input `(n, 784)` of `dtype`.

    With `out` (an `(n, 784)` array of `dtype`) the result is written there: the trainer reuses
    one buffer for every batch instead of allocating a fresh one per step."""
    scale = dtype(1.0 / (255.0 * config.pixel_std))
    offset = dtype(-config.pixel_mean / config.pixel_std)
    flat = pixels.reshape(len(pixels), -1)
    x = np.empty(flat.shape, dtype) if out is None else out
    # A plain cast, then two in-place passes: cheaper than a mixed uint8 * float expression,
    # which numpy evaluates through a casting buffer.
    np.copyto(x, flat, casting="unsafe")
    x *= scale
    x += offset
    return x
