"""One batch prediction, planned and summed up in plain Python (flows/predict/flow.py runs it).

    plan = PredictPlan.make("scans/", "data/models@v3", None, resume=False, workers=2, ...)
    for job in plan.jobs(): ...                 # ShardJobs, one round of shards at a time
    summary = plan.summary(totals, results, scoring_seconds)
    summary_markdown(summary)                   # the Prefect artifact's page

`make` checks the input and output, loads and verifies the published version, and starts (or
resumes) the work folder next to the output; `jobs` lists the input lazily and writes each
shard's listing there.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flows.paths import ONNX_FILE
from flows.predict.score import ModelPayload, ShardJob, ShardResult
from flows.predict.shards import Totals, WorkFolder, shards
from flows.predict.sources import PredictError, Source, check_arguments, default_workers
from flows.registry.versions import PublishedModel, load_published


@dataclass
class PredictPlan:
    source: Source
    output: str  # a local path or a URL
    published: PublishedModel
    work: WorkFolder
    done: set[str]  # paths an earlier run already scored (resume)
    workers: int
    shard_size: int
    max_pixels: int
    # Worker processes each task spreads its shard over (0: score in the task's own thread).
    processes: int
    engine: str = "netcore"  # what computes the probabilities (score.ENGINES)
    started: float = field(default_factory=time.perf_counter)
    skipped: Counter = field(default_factory=Counter)

    @classmethod
    def make(
        cls,
        input: str,
        model: str | None,
        output: str | None,
        resume: bool,
        workers: int | None,
        shard_size: int,
        max_pixels: int,
        worker_processes: bool,
        engine: str = "netcore",
    ) -> PredictPlan:
        started = time.perf_counter()
        workers = workers or default_workers()
        source, output = check_arguments(input, output)
        published = load_published(model)
        if engine == "onnx" and published.onnx is None:
            raise PredictError(f"{published.location} has no {ONNX_FILE}: use --engine netcore")
        work = WorkFolder.next_to(output)
        job = {"input": source.shown_as, "model": published.location, "max_pixels": max_pixels}
        done = work.start(job, resume)
        return cls(
            source=source,
            output=output,
            published=published,
            work=work,
            done=done,
            workers=workers,
            shard_size=shard_size,
            max_pixels=max_pixels,
            processes=workers if worker_processes and workers > 1 else 0,
            engine=engine,
            started=started,
        )

    def jobs(self) -> Iterator[ShardJob]:
        """A ShardJob per shard of the files still to score, listed lazily."""
        published = self.published
        onnx = published.onnx if self.engine == "onnx" else None
        payload = ModelPayload.of(published.version, published.network, published.alias, onnx)
        files = self.source.listing(self.skipped)
        # A task that runs where it is (a thread, a Dask worker) keeps one worker busy: a round
        # of `workers` shards, the last cut evenly, keeps all busy. A task that spreads its chunks
        # over the worker processes keeps them all busy alone (an idle one takes the next chunk
        # of any shard): a round of one shard, so a small folder is one task, not `workers`.
        parts = 1 if self.processes else self.workers
        listing = shards(files, self.shard_size, parts, self.done)
        for number, files in zip(itertools.count(), listing, strict=False):
            listed = self.work.listing(number, files)
            yield ShardJob(number, listed, self.source.opener, payload, self.max_pixels)

    def files_to_score(self) -> int:
        """Files to score, for a progress bar: counted by a second listing, on a terminal only."""
        if not (sys.stdout.isatty() and sys.stderr.isatty()):
            return 0
        return sum(path not in self.done for path in self.source.listing(Counter()))

    def summary(
        self, totals: Totals, results: list[ShardResult], scoring_seconds: float
    ) -> dict[str, Any]:
        """What the run did, as the flow returns it and `digitflow predict --json` prints it."""
        processed = sum(result.scored + result.failed for result in results)
        seconds = time.perf_counter() - self.started
        return {
            "input": self.source.shown_as,
            "output": self.output,
            "model_version": self.published.version,
            "model_alias": self.published.alias,
            "model": self.published.location,
            "engine": self.engine,
            "scored": totals.scored,
            "failed": totals.failed,
            "skipped": sum(self.skipped.values()),
            "skipped_reasons": dict(self.skipped),
            "resumed": len(self.done),
            "images": processed,
            "histogram": {str(k): n for k, n in enumerate(totals.histogram)},
            "seconds": round(seconds, 3),
            "images_per_second": round(processed / seconds, 1),
            "shards": len(results),
            # From the first shard submitted to the last one merged: the rest of `seconds` is the
            # flow's fixed cost (model, listing ahead, the artifact, the output's final rename).
            "scoring_seconds": round(scoring_seconds, 3),
        }


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown page (the Prefect artifact)."""
    histogram = summary["histogram"]
    reasons = ", ".join(f"{n} {why}" for why, n in summary["skipped_reasons"].items()) or "none"
    alias = summary["model_alias"]
    asked = f" (asked for as `{alias}`)" if alias else ""
    engine = " with onnxruntime on its model.onnx" if summary["engine"] == "onnx" else ""
    return "\n".join(
        [
            f"# Batch prediction: {summary['input']}",
            "",
            f"Model **{summary['model_version']}**{asked} ({summary['model']}){engine}; "
            f"output `{summary['output']}`.",
            "",
            "| scored | failed | skipped | images/s | seconds |",
            "|---:|---:|---:|---:|---:|",
            f"| {summary['scored']} | {summary['failed']} | {summary['skipped']} "
            f"| {summary['images_per_second']} | {summary['seconds']} |",
            "",
            f"Skipped: {reasons}. Kept from an earlier run (resume): {summary['resumed']}.",
            "",
            "| digit | " + " | ".join(histogram) + " |",
            "|---|" + "---:|" * len(histogram),
            "| images | " + " | ".join(str(n) for n in histogram.values()) + " |",
        ]
    )
