"""The batch-prediction flow: score every image under a folder (or fsspec URL) with a published
version, one output row per file (`digitflow predict`, flows/cli/predict.py).

    summary = predict_flow("scans/", model="data/models@v3", output="out/scans.parquet")

1. The folder is listed lazily (flows.predict.sources) and cut into shards of
   `shard_size` files (with Dask, or without worker processes, one round of `workers` shards at
   a time, the last round cut evenly: flows.predict.plan); at most 2 x `workers` shards are in
   flight, so memory depends on the shard size, not on the folder's size.
2. Each shard is one Prefect task (flows.predict.score.score_shard), given paths only: its list of
   files is a JSON file in `<output>.parts/`, next to which it writes its rows as a Parquet part
   (atomically). With the default thread task runner the task spreads the shard, in chunks of
   500 files, over the worker processes (flows/predict/pool.py: Pillow holds the GIL; an idle
   worker takes the next chunk, so none waits for a slow one); with `--task-runner dask` the task
   itself runs on a Dask worker.
3. Each finished part is appended to the output at once, while the other shards run; the output
   appears (atomic rename) when all are in. With `resume=True` a rerun after a crash or kill
   scores only the files no part holds yet (flows.predict.shards: the work folder).
4. A summary (scored, failed, skipped, class histogram, images/s) is returned and published as
   the markdown artifact `batch-predict-summary`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.predict.plan import PredictPlan, summary_markdown
from flows.predict.pool import quiet_pillow, worker_pool
from flows.predict.score import ShardJob, ShardResult, score_shard
from flows.predict.shards import DEFAULT_SHARD_SIZE, Merge
from flows.predict.sources import PredictError
from flows.runtime import console
from flows.runtime.api_watch import artifact, stop_if_lost
from netcore.errors import NetcoreError
from netcore.images import DEFAULT_MAX_PIXELS

quiet_pillow()

ARTIFACT_KEY = "batch-predict-summary"
KEPT = "finished shards are kept: rerun with --resume to continue"


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
    engine: str = "netcore",
) -> dict[str, Any]:
    """Score every image under `input` with the published version `model` (default: latest)
    and write one row per file to `output`; returns the summary.

    `worker_processes`: score in worker processes (for the thread task runner); False when the
    task runner already runs tasks in their own processes (Dask). `engine`: netcore's forward
    pass, or "onnx" for onnxruntime on the version's model.onnx (flows.predict.score)."""
    plan = PredictPlan.make(
        input, model, output, resume, workers, shard_size, max_pixels, worker_processes, engine
    )
    with plan.work.merging(plan.output) as merge:
        bar_length = plan.files_to_score()
        scoring_started = time.perf_counter()
        results = _score_all(plan.jobs(), plan.processes, plan.workers, merge, bar_length)
        scoring_seconds = time.perf_counter() - scoring_started
    summary = plan.summary(merge.totals, results, scoring_seconds)
    artifact(create_markdown_artifact, key=ARTIFACT_KEY, markdown=summary_markdown(summary))
    return summary


def _score_all(
    jobs: Iterator[ShardJob], processes: int, workers: int, merge: Merge, bar_length: int
) -> list[ShardResult]:
    """Run a task per shard, at most 2 x `workers` at a time, merging each part into the output
    as it finishes; stop between shards if the Prefect API is lost (the parts stay)."""
    in_flight: deque = deque()
    results: list[ShardResult] = []
    with console.progress(bar_length, "scoring") as bar:

        def collect() -> None:
            stop_if_lost(KEPT)
            job, future = in_flight.popleft()
            try:
                result = future.result()
            except NetcoreError:
                raise  # says what and where itself (a full disk: the work folder adds --resume)
            except Exception as error:
                raise PredictError(
                    f"shard {job.number} failed ({type(error).__name__}: {error}); {KEPT}"
                ) from error
            merge.add(job.part)
            results.append(result)
            bar.update(result.scored + result.failed)

        for job in jobs:
            stop_if_lost(KEPT)
            in_flight.append((job, score_shard_task.submit(job, processes)))
            if len(in_flight) >= 2 * workers:
                collect()
        while in_flight:
            collect()
    return results
