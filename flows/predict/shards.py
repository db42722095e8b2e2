"""Batch prediction's work folder: the part files of one output, resumable, and how a listing is
cut into shards.

    work = WorkFolder.next_to("out/predictions.parquet")     # out/predictions.parquet.parts/
    done = work.start({"input": "/scans", "model": "v3"}, resume=True)   # locked; paths scored
    with work.merging("out/predictions.parquet") as merge:   # earlier parts go in first
        for number, files in enumerate(shards(listing, 5000, workers, done)):
            job_listing = work.listing(number, files)       # part-<run>-000000.json
            ...                                              # score it (flows.predict.score)
            merge.add(job_listing.with_suffix(".parquet"))   # appended to the output as it comes
    # the output is complete now, and the work folder gone

Part files are Parquet in the prediction layout (flows.predict.output) and written atomically, so
after a crash or a kill each part is complete or absent: a resumed run scores exactly the files no
part holds yet, and the output has each once. One run at a time owns an output and its work
folder (flows.predict.lock): a second one refuses, so a live run's parts are never deleted.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from flows.predict.lock import OutputLock
from flows.predict.output import CLASSES, atomic_writer, listed_names, read_part
from flows.predict.sources import PredictError
from netcore.errors import DataFileError, DiskFullError
from netcore.io import TEMPORARY_GLOB, write_atomic, write_json

JOB_FILE = "job.json"
# Files per shard: the unit of work (one Prefect task, whose CPU cost between the flow and its API
# server is fixed: few large shards beat many small ones), of memory (a few KB a file in a
# worker) and of resume. docs/benchmarks.md ("Memory") measures the choice.
DEFAULT_SHARD_SIZE = 5000


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
    `start` to the end of `merging` (flows.predict.lock: `<output>.lock`)."""

    def __init__(self, output: str | Path):
        self.output = Path(output)
        self.folder = self.output.with_name(self.output.name + ".parts")
        self.run = ""
        self.lock: OutputLock | None = None

    @classmethod
    def next_to(cls, output: str | Path) -> WorkFolder:
        return cls(output)

    def start(self, job: dict, resume: bool) -> set[str]:
        """Take the output's lock (a PredictError names the run holding it), and get ready to
        score `job`; returns the paths already scored (only when resuming the same job;
        otherwise any earlier parts are deleted: those of a run that is gone)."""
        self.lock = OutputLock.take(self.output)
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
            for leftover in self.folder.glob(TEMPORARY_GLOB):  # a part being written when killed
                leftover.unlink()
            return {
                name
                for part in self.parts()
                for name in listed_names(read_part(part, ["path", "path_hex"]))
            }
        if self.folder.exists():
            if not job_file.is_file():
                raise DataFileError(self.folder, "exists and is not a work folder: not touching it")
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        write_json(job_file, job)
        return set()

    def listing(self, number: int, files: Sequence[str]) -> Path:
        """Write shard `number`'s list of files; its part will be the same name, .parquet."""
        path = self.folder / f"part-{self.run}-{number:06d}.json"
        text = json.dumps(list(files))
        return write_atomic(path, lambda temporary: temporary.write_text(text))

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet"))

    @contextmanager
    def merging(self, output: str | Path) -> Iterator[Merge]:
        """Stream parts into `output` as they are added (those an earlier run left, first), one
        part in memory at a time; on a clean exit the output appears complete (atomically) and
        the work folder is deleted; on an error the output is untouched and the parts stay."""
        try:
            with atomic_writer(output) as write:
                merge = Merge(write)
                for part in self.parts():
                    merge.add(part)
                yield merge
            shutil.rmtree(self.folder)
        except DiskFullError as error:  # a part, a listing or the output itself
            raise PredictError(
                f"{error}; the finished shards are kept in {self.folder}: free some space, "
                "then rerun with --resume"
            ) from None
        finally:
            self.release()


class Merge:
    """Appends part files to an output; `totals` says what the output holds so far."""

    def __init__(self, write: Callable[[pa.Table], None]):
        self.write = write
        self.totals = Totals()

    def add(self, part: str | Path) -> None:
        table = read_part(part)
        self.write(table)
        self.totals.add(table.column("label").drop_null().to_numpy(), table.num_rows)


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
