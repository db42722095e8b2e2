"""Score image files: the unit of work of batch prediction. No Prefect here, so a shard is scored
in any process: a thread, a worker process (flows.predict.pool), a Dask worker.

    model = ModelPayload.of("v3", network, "production")  # the network as plain data
    table = score_files(["a.png", "b/c.jpg"], LocalFiles("/scans"), model)   # one row per file
    job = ShardJob(0, listing, LocalFiles("/scans"), model)   # listing: a JSON list of paths
    result = score_shard(job, pool.map)                  # scores it, writes job.part

`ModelPayload` is a version name (and the alias it was asked for by) plus the network's config
and weights, which travel to worker processes as plain data; with the `onnx` engine also the
version's model.onnx, which onnxruntime runs in place of netcore's forward pass (the same
probabilities within 1e-5: publishing checks it on the 10,000 test images).

A shard's part file is written atomically next to its listing (flows.predict.shards keeps both in
the work folder), so after a crash each part is complete or absent.
"""

from __future__ import annotations

import functools
import json
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from flows.predict.output import (
    CLASSES,
    SCHEMA,
    atomic_writer,
    labels,
    prediction_table,
    read_part,
)
from flows.predict.shards import part_of
from flows.predict.sources import PredictError, reading_ahead
from flows.registry.store import open_location, storage_errors
from netcore.config import NetworkConfig
from netcore.images import DEFAULT_MAX_PIXELS, load_digits
from netcore.network import Network
from netcore.preprocess import normalize

# Files per call of score_files in a worker: small enough that idle workers share out the end
# of a shard, large enough that each call's overhead (the model travels with it) stays small.
CHUNK = 500


# What computes the probabilities: netcore's own forward pass, or onnxruntime on model.onnx.
ENGINES = ("netcore", "onnx")
# Images per onnxruntime call: a CNN's convolutions run fastest while a batch's arrays stay in
# the CPU's cache (docs/benchmarks.md, "Numbers behind the code").
ONNX_BATCH = 100


@dataclass(frozen=True)
class ModelPayload:
    """A network as plain data (config dict + named arrays), with the version that names it and
    the alias it was asked for by (None when asked for by version); `onnx`, the version's
    model.onnx, when onnxruntime is to score with it."""

    version: str
    config: dict
    params: dict[str, np.ndarray]
    alias: str | None = None
    onnx: bytes | None = None

    @classmethod
    def of(
        cls, version: str, network: Network, alias: str | None = None, onnx: bytes | None = None
    ) -> ModelPayload:
        return cls(version, network.config.to_dict(), dict(network.params), alias, onnx)

    def network(self) -> Network:
        dtype = next(iter(self.params.values())).dtype.type
        return Network(NetworkConfig.from_dict(self.config), dtype=dtype, params=dict(self.params))

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities `(n, 10)` for uint8 pixels `(n, 28, 28)`."""
        if self.onnx is None:
            network = self.network()
            return network.predict_proba(normalize(pixels, network.config))
        if not len(pixels):
            return np.empty((0, CLASSES), np.float32)
        flat = np.ascontiguousarray(pixels.reshape(len(pixels), -1))
        session = onnx_session(self.onnx)
        batches = [
            session.run(["probabilities"], {"pixels": flat[start : start + ONNX_BATCH]})[0]
            for start in range(0, len(flat), ONNX_BATCH)
        ]
        return np.concatenate(batches)


@functools.lru_cache(maxsize=2)
def onnx_session(model: bytes) -> Any:
    """An onnxruntime session for `model`, made once per process. One thread: the worker pool
    already runs a process per core."""
    import onnxruntime  # only where the onnx engine scores

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class ShardJob:
    """Score the files named in `listing` (a JSON list of relative paths, opened with
    `opener(path)`) and write their rows next to it, to `part`. Only locations and the model
    travel: the list of names stays in its file (Prefect would otherwise inspect every name).
    `listing` is a local path or a URL (s3://...): on a Dask cluster the worker that scores the
    shard reads it and writes the part itself."""

    number: int
    listing: str
    opener: Callable[[str], BinaryIO]
    model: ModelPayload
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def part(self) -> str:
        return part_of(self.listing)


@dataclass(frozen=True)
class ShardResult:
    number: int
    scored: int
    failed: int


def score_files(
    files: Sequence[str],
    opener: Callable[[str], BinaryIO],
    model: ModelPayload,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> pa.Table:
    """Decode, normalize and score `files`: one row each, errors included."""
    pixels, problems = load_digits(files, reading_ahead(opener, files), max_pixels)
    probabilities = model.predict_proba(pixels)
    return prediction_table(files, probabilities, problems, model.version, model.alias)


def score_shard(job: ShardJob, map_chunks: Callable = map) -> ShardResult:
    """Score every file of the shard, CHUNK files per call of `score_files` mapped with
    `map_chunks` (the built-in map, or a process pool's: idle workers then take over the rest of
    a shard, so none waits for a slow one), and write the part file."""
    files = json.loads(_read_listing(job.listing))
    chunks = [files[start : start + CHUNK] for start in range(0, len(files), CHUNK)]
    score = functools.partial(
        score_files, opener=job.opener, model=job.model, max_pixels=job.max_pixels
    )
    table = pa.concat_tables(map_chunks(score, chunks)) if chunks else SCHEMA.empty_table()
    with atomic_writer(job.part) as write:
        write(table)
    failed = table.num_rows - table.column("error").null_count
    return ShardResult(job.number, table.num_rows - failed, failed)


def _read_listing(listing: str) -> bytes:
    """A shard's listing; a PredictError in one line if this process cannot see it (a Dask
    worker on another machine, given an output on a disk of the flow's machine only)."""
    fs, path = open_location(listing)
    with storage_errors(listing):
        try:
            return fs.cat_file(path)
        except FileNotFoundError:
            raise PredictError(
                f"{listing}: not found on {socket.gethostname()}, where this shard runs: a Dask "
                "cluster on other machines needs the output in object storage (s3://...) or in "
                "a folder they all share, and the input too"
            ) from None


def warm_up(engine: str = "netcore") -> None:
    """Write, read back and count one row, as scoring and merging do; for the onnx `engine`,
    import onnxruntime. pyarrow imports pandas and more on first use (most of a second), and
    onnxruntime's import is most of a worker's first chunk: this moves those costs out of the
    first shard, to where the time is free (a worker's start-up, the flow process's wait for
    its Prefect server)."""
    with tempfile.TemporaryDirectory() as folder:
        part = Path(folder) / "warm-up.parquet"
        with atomic_writer(part) as write:
            write(prediction_table(["warm-up.png"], np.full((1, CLASSES), 0.1), [None], ""))
        labels(read_part(str(part)))
    if engine == "onnx":
        import onnxruntime  # noqa: F401
