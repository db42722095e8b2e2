"""The worker processes that score shards for the default (thread) task runner.

Decoding an image in Pillow is mostly Python code holding the GIL: two threads score no faster
than one (measured: docs/benchmarks.md, "Batch prediction"). So each Prefect task, running in a
thread of the flow, spreads its shard's chunks over these processes and waits (releasing the GIL).

    pool = worker_pool(2)           # started once per process and reused (the CLI starts it early;
                                    # worker_pool(2, "onnx"): its workers import onnxruntime too)
    result = score_shard(job, pool.map)       # flows.predict.score

Workers are spawned, not forked (the flow process runs threads), import only netcore and the
plain modules of flows.predict (no Prefect), and use one BLAS thread each: N workers on N cores,
not N x N busy threads.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor

# Set while the workers are spawned (they inherit it), then restored in this process.
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

_pools: dict[int, ProcessPoolExecutor] = {}
_lock = threading.Lock()


def _ready(engine: str) -> None:
    """Import and exercise the scoring code (for `engine`) now, not on the first shard."""
    from flows.predict.score import warm_up

    warm_up(engine)


def quiet_pillow() -> None:
    """netcore.images refuses oversized images itself (a configurable limit, with a clear row);
    Pillow's own warning about them would only repeat that on stderr."""
    import warnings

    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _exit_with_parent() -> None:
    """Exit when the process that started this worker dies, even by SIGKILL, which gives the pool
    no chance to stop its workers: they would run on for good (tests/reliability/test_orphans.py).
    The parent's sentinel (a pipe multiprocessing keeps open) reads as ready once it is gone."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()


def _start_worker() -> None:
    quiet_pillow()
    _exit_with_parent()


def worker_pool(workers: int, engine: str = "netcore") -> ProcessPoolExecutor:
    """A pool of `workers` processes, all started (and made ready to score with `engine`); the
    same one for every call with `workers` (a pool broken by a killed worker is replaced)."""
    with _lock:
        pool = _pools.get(workers)
        if pool is None or getattr(pool, "_broken", False):
            pool = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker
            )
            saved = {name: os.environ.get(name) for name in ONE_THREAD}
            os.environ.update(ONE_THREAD)
            try:
                # Each submit before any worker is idle spawns one: all start now, with ONE_THREAD.
                for _ in range(workers):
                    pool.submit(_ready, engine)
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
            _pools[workers] = pool
        return pool
