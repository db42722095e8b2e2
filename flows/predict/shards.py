"""Batch prediction's work folder: the part files of one output, resumable, and how a listing is
cut into shards.

    work = WorkFolder.next_to("out/predictions.parquet")     # out/predictions.parquet.parts/
    done = work.start({"input": "/scans", "model": "v3"}, resume=True)   # locked; paths scored
    with work.merging("out/predictions.parquet") as merge:   # earlier parts go in first
        for number, files in enumerate(shards(listing, 10_000, workers, done)):
            job_listing = work.listing(number, files)       # .../part-<run>-000000.json
            ...                                              # score it (flows.predict.score)
            merge.add(part_of(job_listing))                  # appended to the output as it comes
    # the output is complete now, and the work folder gone

The output, and so its work folder, may be a local path or a URL (s3://bucket/out.parquet: its
parts are objects under s3://bucket/out.parquet.parts/, written by whichever machine scores the
shard). Part files are Parquet in the prediction layout (flows.predict.output) and written
atomically, so after a crash or a kill each part is complete or absent: a resumed run, from any
machine that reaches the output, scores exactly the files no part holds yet, and the output has
each once. One run at a time owns an output and its work folder (flows.predict.lock): a second
one refuses, so a live run's parts are never deleted.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from flows.predict.lock import OutputLock, take_output_lock
from flows.predict.output import (
    CLASSES,
    atomic_writer,
    labels,
    listed_names,
    output_format,
    read_part,
)
from flows.predict.sources import PredictError
from flows.registry.store import (
    display,
    is_local,
    open_location,
    remove_tree,
    storage_errors,
    write_whole,
)
from netcore.errors import DataFileError, DiskFullError
from netcore.io import TEMPORARY_GLOB, move_into_place

JOB_FILE = "job.json"
PART_NAME = re.compile(r"part-\d+-\d+\.(json|parquet)")
# Files per shard: the unit of work (one Prefect task, whose CPU cost between the flow and its API
# server is fixed: few large shards beat many small ones, and a folder of 10,000 files is one
# task), of memory (about 70 bytes a file of its rows in the command; a worker holds one chunk)
# and of resume. docs/benchmarks.md ("Memory", "Throughput") measures the choice.
DEFAULT_SHARD_SIZE = 10_000


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
    job they belong to (a resume must be the same job). A run owns it, and the output, from
    `start` to the end of `merging` (flows.predict.lock: `<output>.lock`). Locations it hands
    out (listings, parts) are local paths or URLs, as the output is."""

    def __init__(self, output: str | Path):
        self.output = str(output)
        self.fs, path = open_location(self.output)
        self.path = f"{path}.parts"  # on self.fs
        self.folder = display(self.fs, self.path)
        self.run = ""
        self.kept: list[str] = []  # an earlier run's parts, resumed: they go into the output first
        self.lock: OutputLock | None = None

    @classmethod
    def next_to(cls, output: str | Path) -> WorkFolder:
        return cls(output)

    def start(self, job: dict, resume: bool) -> set[str]:
        """Take the output's lock (a PredictError names the run holding it), and get ready to
        score `job`; returns the paths already scored (only when resuming the same job;
        otherwise any earlier parts are deleted: those of a run that is gone)."""
        with storage_errors(self.output):
            self.lock = take_output_lock(self.output)
            try:
                return self._start(job, resume)
            except BaseException:
                self.release()
                raise

    def release(self) -> None:
        """Let go of the output (done by `merging`; a process that dies lets go by itself)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _start(self, job: dict, resume: bool) -> set[str]:
        fs = self.fs
        job_file = f"{self.path}/{JOB_FILE}"
        # Parts names sort by run, then shard: the output lists earlier runs first.
        self.run = f"{time.time_ns():020d}"
        fs.invalidate_cache(self.path)  # s3fs caches listings: see the store as it is now
        if resume and fs.isfile(job_file):
            earlier = json.loads(fs.cat_file(job_file))
            if earlier != job:
                raise DataFileError(
                    display(fs, job_file),
                    f"belongs to another job ({earlier}, now {job}): start over without resuming",
                )
            # A part being written when its run was killed (on an object store an unfinished
            # upload is invisible: nothing to remove).
            for leftover in fs.glob(f"{self.path}/{TEMPORARY_GLOB}"):
                fs.rm_file(leftover)
            # These parts, and no other, go into the output: a shard of the earlier run still
            # being scored by a Dask worker may yet write its part, and its files are scored
            # again by this run.
            self.kept = self.parts()
            return {
                name
                for part in self.kept
                for name in listed_names(read_part(part, ["path", "path_hex"]))
            }
        if fs.exists(self.path):
            if not self._is_work_folder():
                raise DataFileError(self.folder, "exists and is not a work folder: not touching it")
            remove_tree(fs, self.path)
        write_whole(fs, job_file, (json.dumps(job, indent=2) + "\n").encode())
        return set()

    def _is_work_folder(self) -> bool:
        """Whether the existing folder is ours to clear: it has a job.json, or holds only part
        files (a shard of a run that was killed, finished by a Dask worker after its run's
        work folder was removed)."""
        names = [path.rsplit("/", 1)[-1] for path in self.fs.ls(self.path, detail=False)]
        return JOB_FILE in names or all(PART_NAME.fullmatch(name) for name in names)

    def listing(self, number: int, files: Sequence[str]) -> str:
        """Write shard `number`'s list of files; its part will be the same name, .parquet
        (`part_of`)."""
        path = f"{self.path}/part-{self.run}-{number:06d}.json"
        write_whole(self.fs, path, json.dumps(list(files)).encode())
        return display(self.fs, path)

    def parts(self) -> list[str]:
        self.fs.invalidate_cache(self.path)
        return [
            display(self.fs, path) for path in sorted(self.fs.glob(f"{self.path}/part-*.parquet"))
        ]

    @contextmanager
    def merging(self, output: str | Path) -> Iterator[Merge]:
        """Stream parts into `output` as they are added (those an earlier run left, first), one
        part in memory at a time; on a clean exit the output appears complete (atomically) and
        the work folder is deleted; on an error the output is untouched and the parts stay."""
        merge = Merge(output)
        try:
            with storage_errors(output), merge.writer:
                for part in self.kept:
                    merge.add(part)
                yield merge
                if self.lock is not None:
                    self.lock.check()  # still ours: only now may the output appear
                merge.finish()
            remove_tree(self.fs, self.path)
        except DiskFullError as error:  # a part, a listing or the output itself
            raise PredictError(
                f"{error}; the finished shards are kept in {self.folder}: free some space, "
                "then rerun with --resume"
            ) from None
        finally:
            self.release()


def part_of(listing: str) -> str:
    """The part file a shard's listing is scored into: the same name, .parquet."""
    return listing.removesuffix(".json") + ".parquet"


class Merge:
    """Appends part files to `output`; `totals` says what it holds so far. `finish` makes the
    output appear; `writer` holds its open writer, if any (WorkFolder.merging closes it).

    A part is a Parquet file of the output's own layout: when the output is one local Parquet
    part (a folder of up to one shard), that part becomes the output, moved into place, rather
    than read back and written again at the end of the run. So the first part is held back until
    a second one comes or the run finishes."""

    def __init__(self, output: str | Path):
        self.output = str(output)
        self.totals = Totals()
        self.writer = ExitStack()
        self.write: Callable[[pa.Table], None] | None = None
        self.held: str | None = None  # the first part, still only counted
        fs, _ = open_location(self.output)
        self.movable = is_local(fs) and output_format(self.output) == ".parquet"

    def add(self, part: str) -> None:
        if self.movable and self.write is None and self.held is None:
            self.held = part
            table = read_part(part, ["label"])
        else:
            table = read_part(part)
            self._opened()(table)
        self.totals.add(labels(table), table.num_rows)

    def finish(self) -> None:
        """The output appears, complete: the one held part moved there, or every part written
        (none at all: an output with no rows)."""
        if self.held is not None:
            move_into_place(self.held, self.output)
            return
        self._opened()
        self.writer.close()

    def _opened(self) -> Callable[[pa.Table], None]:
        """The output's `write`, opened on first use, the held part written first."""
        if self.write is None:
            self.write = self.writer.enter_context(atomic_writer(self.output))
            if self.held is not None:
                self.write(read_part(self.held))
                self.held = None
        return self.write


def shards(
    paths: Iterable[str], size: int, parts: int, done: set[str]
) -> Iterator[tuple[str, ...]]:
    """The paths not in `done`, in rounds of `parts` groups of `size` (one group per worker).
    The listing is read one round ahead: the last round, whatever is left, is cut into `parts`
    equal groups, so that no worker idles at the end while another finishes (10,000 files, size
    5,000, 2 workers: 5,000 + 5,000; 12,000: 5,000 + 5,000, then 1,000 + 1,000)."""
    pending = (path for path in paths if path not in done)
    ahead: deque[str] = deque()
    while True:
        ahead.extend(itertools.islice(pending, parts * size + 1 - len(ahead)))
        last = len(ahead) <= parts * size
        for index in range(parts):
            take = len(ahead) // (parts - index) if last else size
            if take:
                yield tuple(ahead.popleft() for _ in range(take))
        if last:
            return
