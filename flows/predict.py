"""The batch-prediction flow: score every image under a folder (or fsspec URL) with a published
version, one output row per file (`digitflow predict`, flows/predict_cli.py).

    summary = predict_flow("scans/", model="data/models@v3", output="out/scans.parquet")

1. The folder is listed lazily (netcore.scan; fsspec's walk for URLs) and cut into shards of
   `shard_size` files, one round of `workers` shards at a time (the last round cut evenly); at
   most 2 x `workers` shards are in flight, so memory depends on the shard size, not on the
   folder's size.
2. Each shard is one Prefect task (netcore.batch.score_shard), given paths only: its list of
   files is a JSON file in `<output>.parts/`, next to which it writes its rows as a Parquet part
   (atomically). With the default thread task runner the task spreads the shard, in chunks of
   500 files, over the worker processes (flows/predict_pool.py: Pillow holds the GIL; an idle
   worker takes the next chunk, so none waits for a slow one); with `--task-runner dask` the task
   itself runs on a Dask worker.
3. Each finished part is appended to the output at once, while the other shards run; the output
   appears (atomic rename) when all are in. With `resume=True` a rerun after a crash or kill
   scores only the files no part holds yet.
4. A summary (scored, failed, skipped, class histogram, images/s) is returned and published as
   the markdown artifact `batch-predict-summary`.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows import console
from flows.predict_pool import quiet_pillow, worker_pool
from flows.predict_sources import (
    PredictError,
    Source,
    check_arguments,
    default_output,
    default_workers,
    shards,
)
from flows.registry import load_published
from netcore.batch import (
    DEFAULT_SHARD_SIZE,
    Merge,
    ModelPayload,
    ShardJob,
    ShardResult,
    WorkFolder,
    score_shard,
)
from netcore.images import DEFAULT_MAX_PIXELS

__all__ = ["default_output", "predict_flow"]  # default_output: for flows.serve

quiet_pillow()

ARTIFACT_KEY = "batch-predict-summary"


@task(name="score-shard", cache_policy=NO_CACHE, task_run_name="score-shard-{job.number}")
def score_shard_task(job: ShardJob, workers: int) -> ShardResult:
    """Score one shard: its chunks spread over `workers` worker processes when `workers` > 0,
    else right here."""
    if workers:
        return score_shard(job, worker_pool(workers).map)
    return score_shard(job)


@flow(name="batch-predict")
def predict_flow(
    input: str,
    model: str | None = None,
    output: str | None = None,
    resume: bool = False,
    workers: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    worker_processes: bool = True,
) -> dict[str, Any]:
    """Score every image under `input` with the published version `model` (default: latest)
    and write one row per file to `output`; returns the summary.

    `worker_processes`: score in worker processes (for the thread task runner); False when the
    task runner already runs tasks in their own processes (Dask)."""
    started = time.perf_counter()
    workers = workers or default_workers()
    source, output_path = check_arguments(input, output)
    published = load_published(model)
    work = WorkFolder.next_to(output_path)
    job = {"input": source.shown_as, "model": published.location, "max_pixels": max_pixels}
    done = work.start(job, resume)
    payload = ModelPayload.of(published.version, published.network)
    skipped: Counter = Counter()

    def shard_job(number: int, files: tuple[str, ...]) -> ShardJob:
        listing = work.listing(number, files)
        return ShardJob(number, listing, source.opener, payload, max_pixels)

    listing = shards(source.listing(skipped), shard_size, workers, done)
    processes = workers if worker_processes and workers > 1 else 0
    with work.merging(output_path) as merge:
        jobs = map(shard_job, itertools.count(), listing)
        bar_length = _bar_length(source, done)
        scoring_started = time.perf_counter()
        results = _score_all(jobs, processes, workers, merge, bar_length)
        scoring_seconds = time.perf_counter() - scoring_started
    totals = merge.totals
    processed = sum(result.scored + result.failed for result in results)
    seconds = time.perf_counter() - started
    summary = {
        "input": source.shown_as,
        "output": str(output_path),
        "model_version": published.version,
        "model": published.location,
        "scored": totals.scored,
        "failed": totals.failed,
        "skipped": sum(skipped.values()),
        "skipped_reasons": dict(skipped),
        "resumed": len(done),
        "images": processed,
        "histogram": {str(k): n for k, n in enumerate(totals.histogram)},
        "seconds": round(seconds, 3),
        "images_per_second": round(processed / seconds, 1),
        "shards": len(results),
        # From the first shard submitted to the last one merged: the rest of `seconds` is the
        # flow's fixed cost (model, listing ahead, the artifact, the output's final rename).
        "scoring_seconds": round(scoring_seconds, 3),
    }
    create_markdown_artifact(key=ARTIFACT_KEY, markdown=summary_markdown(summary))
    return summary


def _score_all(
    jobs: Iterator[ShardJob], processes: int, workers: int, merge: Merge, bar_length: int
) -> list[ShardResult]:
    """Run a task per shard, at most 2 x `workers` at a time, merging each part into the output
    as it finishes."""
    in_flight: deque = deque()
    results: list[ShardResult] = []
    with console.progress(bar_length, "scoring") as bar:

        def collect() -> None:
            job, future = in_flight.popleft()
            try:
                result = future.result()
            except Exception as error:
                raise PredictError(
                    f"shard {job.number} failed ({type(error).__name__}: {error}); "
                    "finished shards are kept: rerun with --resume to continue"
                ) from error
            merge.add(job.part)
            results.append(result)
            bar.update(result.scored + result.failed)

        for job in jobs:
            in_flight.append((job, score_shard_task.submit(job, processes)))
            if len(in_flight) >= 2 * workers:
                collect()
        while in_flight:
            collect()
    return results


def _bar_length(source: Source, done: set[str]) -> int:
    """Files to score, for a progress bar: counted by a second listing, on a terminal only."""
    if not (sys.stdout.isatty() and sys.stderr.isatty()):
        return 0
    return sum(path not in done for path in source.listing(Counter()))


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown page (the Prefect artifact)."""
    histogram = summary["histogram"]
    reasons = ", ".join(f"{n} {why}" for why, n in summary["skipped_reasons"].items()) or "none"
    return "\n".join(
        [
            f"# Batch prediction: {summary['input']}",
            "",
            f"Model **{summary['model_version']}** ({summary['model']}); "
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
