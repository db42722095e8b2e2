"""Scaling out: `digitflow predict --task-runner dask --dask-address tcp://...` on a real Dask
cluster of 1, then 2 worker processes (`dask scheduler`, `dask worker --nthreads 1`), from a
local folder and from an S3-compatible server (moto's, a separate process), against a running
Prefect server; and the object-store requests a run makes, counted in the S3 server's request
log. docs/scaling.md's plan for 100 million images rests on these numbers.

    make bench BENCHMARKS=scale_out                   # or:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE DIGITFLOW_MNIST_SOURCE=../shared/data/mnist \\
        .venv/bin/python -m bench.scale_out [--files 8000] [--shard-size 1000] [--repeats 3]

After an untimed run (each worker's first task imports Prefect and the scoring code), each
repeat runs, with the same cluster, the local folder (output on the local disk: the workers
share this machine's disk) and the S3 prefix (output, parts and lease on S3; the workers read
the images and write their parts there themselves); the cluster then gets its second worker.
Reported per case: images/s while scoring (first shard submitted to last part merged: the
flow's start-up excluded), per worker, and the median over the repeats; a worker's resident
memory after its runs; for S3, the requests per run by kind and per image. The model is the
benchmark's untrained network (scoring costs the same). The last line of stdout is one JSON
object.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import fsspec
import psutil

from bench.predict_common import (
    DIGITFLOW,
    WORKSPACE,
    bench_registry,
    load_average,
    predict_env,
    prefect_server,
    write_folder,
)
from tests.servers import DaskCluster, S3Server

REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP')


def request_kind(method: str, target: str) -> str:
    """A line of moto's request log as the S3 operation it was."""
    query = target.partition("?")[2]
    if method == "GET" and "list-type" in query:
        return "LIST"
    if method == "PUT" and "partNumber" in query:
        return "PUT part (multipart)"
    if method == "POST" and "uploads" in query:
        return "POST start multipart"
    if method == "POST" and "uploadId" in query:
        return "POST complete multipart"
    if method == "POST" and "delete" in query:
        return "POST delete (batch)"
    return method


def requests_since(log: Path, offset: int) -> tuple[collections.Counter, int]:
    with open(log, "rb") as stream:
        stream.seek(offset)
        text = stream.read().decode(errors="replace")
        end = stream.tell()
    kinds = collections.Counter(request_kind(*match.groups()) for match in REQUEST.finditer(text))
    return kinds, end


def worker_memory(cluster: DaskCluster) -> int:
    """The largest resident memory (MB) of a worker: its `dask worker` process and the worker
    process its nanny started, summed."""
    sizes = []
    for worker in cluster.workers:
        tree = psutil.Process(worker.pid)
        processes = [tree, *tree.children(recursive=True)]
        sizes.append(sum(process.memory_info().rss for process in processes))
    return round(max(sizes) / 2**20)


def run(arguments: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run(
        [DIGITFLOW, *arguments, "--json"], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"digitflow {' '.join(arguments)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=8000, help="PNG files (default 8000)")
    parser.add_argument("--shard-size", type=int, default=1000, help="files per shard (1000)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per case (default 3)")
    args = parser.parse_args()

    folder = write_folder(WORKSPACE / f"scale-{args.files}-pngs", args.files)
    model = bench_registry()
    load_before = load_average()
    results: dict[str, list[float]] = collections.defaultdict(list)
    requests: dict[str, collections.Counter] = {}
    memory: dict[str, int] = {}
    s3_folder = WORKSPACE / "s3"
    s3_folder.mkdir(parents=True, exist_ok=True)
    with S3Server.start(s3_folder) as s3_server, prefect_server() as api:
        os.environ.update(s3_server.env)  # s3fs here, the CLI and the workers reach it
        bucket = s3_server.new_bucket()
        fsspec.filesystem("s3").put(f"{folder}/", f"{bucket}/in/", recursive=True)
        env = predict_env() | {"PREFECT_API_URL": api}
        log = s3_folder / "moto.log"
        common = ["--model", model, "--shard-size", str(args.shard_size)]
        for workers in (1, 2):
            cluster_folder = WORKSPACE / f"dask-{workers}"
            cluster_folder.mkdir(parents=True, exist_ok=True)
            with DaskCluster.start(cluster_folder, workers=workers, env=dict(os.environ)) as dask:
                options = ["--task-runner", "dask", "--dask-address", dask.address]
                options += ["--workers", str(workers), *common]
                local = ["predict", str(folder), "--output", str(WORKSPACE / "scale.parquet")]
                # Untimed: each worker imports Prefect and the scoring code on its first task.
                run([*local, *options], env)
                for repeat in range(args.repeats):
                    local_summary = run([*local, *options], env)
                    offset = log.stat().st_size
                    output = f"s3://{bucket}/out/{workers}-{repeat}.parquet"
                    s3_summary = run(
                        ["predict", f"s3://{bucket}/in", "--output", output, *options], env
                    )
                    requests[f"s3, {workers} worker(s)"], _ = requests_since(log, offset)
                    for name, summary in (("local", local_summary), ("s3", s3_summary)):
                        rate = summary["images"] / summary["scoring_seconds"]
                        results[f"{name}, {workers} worker(s)"].append(rate)
                    memory[f"{workers} worker(s)"] = worker_memory(dask)
                    print(
                        f"{workers} worker(s), repeat {repeat + 1}: local "
                        f"{results[f'local, {workers} worker(s)'][-1]:,.0f} images/s, S3 "
                        f"{results[f's3, {workers} worker(s)'][-1]:,.0f} images/s",
                        flush=True,
                    )
    medians = {case: statistics.median(rates) for case, rates in results.items()}
    report = {
        "files": args.files,
        "shard_size": args.shard_size,
        "repeats": args.repeats,
        "cores": len(os.sched_getaffinity(0)),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "median_images_per_second": {case: round(rate) for case, rate in medians.items()},
        "per_worker": {
            case: round(rate / int(case.split(", ")[1][0])) for case, rate in medians.items()
        },
        "scaling_1_to_2": {
            source: round(medians[f"{source}, 2 worker(s)"] / medians[f"{source}, 1 worker(s)"], 2)
            for source in ("local", "s3")
        },
        "worker_rss_mb": memory,
        "s3_requests_per_run": {case: dict(kinds) for case, kinds in requests.items()},
        "s3_requests_per_image": {
            case: round(sum(kinds.values()) / args.files, 3) for case, kinds in requests.items()
        },
        "runs": {case: [round(rate) for rate in rates] for case, rates in results.items()},
    }
    print(
        f"\n{args.files:,} PNG files, shards of {args.shard_size}, {report['cores']} cores, "
        f"load average {load_before} -> {report['load_average_after']}"
    )
    for case, rate in medians.items():
        print(f"  {case:<20} {rate:>8,.0f} images/s  ({report['per_worker'][case]:,} per worker)")
    for source, factor in report["scaling_1_to_2"].items():
        print(f"  {source}: 2 workers score {factor:.2f}x as fast as 1")
    for case, megabytes in memory.items():
        print(f"  resident memory of a worker ({case}): {megabytes} MB")
    for case, kinds in requests.items():
        listed = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
        print(f"  S3 requests, {case}: {listed}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
