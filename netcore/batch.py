"""Score image files in shards, resumably: the unit of work of batch prediction (no Prefect here,
so a shard runs in any process: a thread, a worker process, a Dask worker).

    work = WorkFolder.next_to("out/predictions.parquet")     # out/predictions.parquet.parts/
    done = work.start({"input": "/scans", "model": "v3"}, resume=True)   # paths already scored
    with work.merging("out/predictions.parquet") as merge:   # earlier parts go in first
        listing = work.listing(0, ["a.png", "b.jpg"])       # part-<run>-000000.json
        job = ShardJob(0, listing, LocalFiles("/scans"), model)
        score_shard(job)                  # in any process: scores the files, writes job.part
        merge.add(job.part)               # appended to the output as it comes
    # the output is complete now, and the work folder gone

`model` is a ModelPayload: a version name plus the network's config and weights, which travel to
worker processes as plain data. Part files are Parquet in the prediction layout
(netcore.predictions) and written atomically, so after a crash or a kill each part is complete or
absent: a resumed run scores exactly the files no part holds yet, and the output has each once.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from netcore.config import NetworkConfig
from netcore.errors import DataFileError
from netcore.images import DEFAULT_MAX_PIXELS, load_digits
from netcore.network import Network
from netcore.predictions import CLASSES, SCHEMA, atomic_writer, prediction_table, read_part
from netcore.preprocess import normalize

JOB_FILE = "job.json"
# Files per call of score_files in a worker: small enough that idle workers share out the end
# of a shard, large enough that each call's overhead (the model travels with it) stays small.
CHUNK = 500
# Files per shard: the unit of work (one Prefect task, which costs tens of ms of CPU between the
# flow and its API server: few large shards beat many small ones), of memory (about 6 KB a file
# in a worker) and of resume.
DEFAULT_SHARD_SIZE = 5000


@dataclass(frozen=True)
class ModelPayload:
    """A network as plain data (config dict + named arrays), with the version that names it."""

    version: str
    config: dict
    params: dict[str, np.ndarray]

    @classmethod
    def of(cls, version: str, network: Network) -> ModelPayload:
        return cls(version, network.config.to_dict(), dict(network.params))

    def network(self) -> Network:
        dtype = next(iter(self.params.values())).dtype.type
        return Network(NetworkConfig.from_dict(self.config), dtype=dtype, params=dict(self.params))


@dataclass(frozen=True)
class ShardJob:
    """Score the files named in `listing` (a JSON list of relative paths, opened with
    `opener(path)`) and write their rows next to it, to `part`. Only paths and the model travel:
    the list of names stays in its file (Prefect would otherwise inspect every name)."""

    number: int
    listing: Path
    opener: Callable[[str], BinaryIO]
    model: ModelPayload
    max_pixels: int = DEFAULT_MAX_PIXELS

    @property
    def part(self) -> Path:
        return self.listing.with_suffix(".parquet")


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
    network = model.network()
    pixels, problems = load_digits(files, opener, max_pixels)
    probabilities = network.predict_proba(normalize(pixels, network.config))
    return prediction_table(files, probabilities, problems, model.version)


def score_shard(job: ShardJob, map_chunks: Callable = map) -> ShardResult:
    """Score every file of the shard, CHUNK files per call of `score_files` mapped with
    `map_chunks` (the built-in map, or a process pool's: idle workers then take over the rest of
    a shard, so none waits for a slow one), and write the part file."""
    files = json.loads(job.listing.read_text())
    chunks = [files[start : start + CHUNK] for start in range(0, len(files), CHUNK)]
    score = functools.partial(
        score_files, opener=job.opener, model=job.model, max_pixels=job.max_pixels
    )
    table = pa.concat_tables(map_chunks(score, chunks)) if chunks else SCHEMA.empty_table()
    with atomic_writer(job.part) as write:
        write(table)
    failed = table.num_rows - table.column("error").null_count
    return ShardResult(job.number, table.num_rows - failed, failed)


def warm_up() -> None:
    """Write, read back and count one row, as scoring and merging do. pyarrow imports pandas and
    more on first use (most of a second): this moves that cost out of the first shard, to where
    the time is free (a worker's start-up, the flow process's wait for its Prefect server)."""
    with tempfile.TemporaryDirectory() as folder:
        part = Path(folder) / "warm-up.parquet"
        with atomic_writer(part) as write:
            write(prediction_table(["warm-up.png"], np.full((1, CLASSES), 0.1), [None], ""))
        Merge(lambda table: None).add(part)


@dataclass
class Totals:
    """What an output file holds: rows scored, rows failed, and scored rows per class."""

    scored: int = 0
    failed: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * CLASSES)

    def add(self, labels: np.ndarray, rows: int) -> None:
        self.scored += len(labels)
        self.failed += rows - len(labels)
        counts = np.bincount(labels, minlength=CLASSES)[:CLASSES]
        self.histogram = [a + int(b) for a, b in zip(self.histogram, counts, strict=True)]


class WorkFolder:
    """The part files of one output, in `<output>.parts/` next to it, plus `job.json` naming the
    job they belong to (a resume must be the same job)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.run = ""

    @classmethod
    def next_to(cls, output: str | Path) -> WorkFolder:
        output = Path(output)
        return cls(output.with_name(output.name + ".parts"))

    def start(self, job: dict, resume: bool) -> set[str]:
        """Get ready to score `job`; returns the paths already scored (only when resuming the
        same job; otherwise any earlier parts are deleted)."""
        job_file = self.folder / JOB_FILE
        # Parts names sort by run, then shard: the output lists earlier runs first.
        self.run = f"{time.time_ns():020d}"
        if resume and job_file.is_file():
            earlier = json.loads(job_file.read_text())
            if earlier != job:
                raise DataFileError(
                    job_file,
                    f"belongs to another job ({earlier}, now {job}): start over without resuming",
                )
            for leftover in self.folder.glob(".*.tmp"):  # a part being written when killed
                leftover.unlink()
            return {
                path for part in self.parts() for path in read_part(part, ["path"])[0].to_pylist()
            }
        if self.folder.exists():
            if not job_file.is_file():
                raise DataFileError(self.folder, "exists and is not a work folder: not touching it")
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        temporary = self.folder / f".{JOB_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        temporary.write_text(json.dumps(job, indent=2) + "\n")
        os.replace(temporary, job_file)
        return set()

    def listing(self, number: int, files: Sequence[str]) -> Path:
        """Write shard `number`'s list of files; its part will be the same name, .parquet."""
        path = self.folder / f"part-{self.run}-{number:06d}.json"
        path.write_text(json.dumps(list(files)))
        return path

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet"))

    @contextmanager
    def merging(self, output: str | Path) -> Iterator[Merge]:
        """Stream parts into `output` as they are added (those an earlier run left, first), one
        part in memory at a time; on a clean exit the output appears complete (atomically) and
        the work folder is deleted; on an error the output is untouched and the parts stay."""
        with atomic_writer(output) as write:
            merge = Merge(write)
            for part in self.parts():
                merge.add(part)
            yield merge
        shutil.rmtree(self.folder)


class Merge:
    """Appends part files to an output; `totals` says what the output holds so far."""

    def __init__(self, write: Callable[[pa.Table], None]):
        self.write = write
        self.totals = Totals()

    def add(self, part: str | Path) -> None:
        table = read_part(part)
        self.write(table)
        self.totals.add(table.column("label").drop_null().to_numpy(), table.num_rows)
