"""numpy's float32 GEMM peak, the yardstick the training benchmarks divide their GFLOP/s by."""

from __future__ import annotations

import time

import numpy as np


def gemm_peak(size: int = 2048, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of numpy's matmul on a square problem, at the caller's thread limit."""
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = a.T.copy()
    a @ b
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - started) / 1e9)
    return best
