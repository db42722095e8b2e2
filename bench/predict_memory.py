"""Batch-prediction memory: the peak RSS of `digitflow predict` scoring 200,000 PNG files, and
how it depends on the shard size, not on the folder's size.

    make bench                                      # or:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE DIGITFLOW_MNIST_SOURCE=../shared/data/mnist \\
        .venv/bin/python -m bench.predict_memory [--images 200000] [--json]

The files (the MNIST test PNGs, repeated) are generated once under /tmp/digitflow-bench/synthetic,
never in the repository: a quarter in small/, the rest in rest/, so INPUT synthetic/small holds
N/4 files and INPUT synthetic all N. Runs: N/4 and N files with the default shard size, then N
files with smaller and larger shards. The peak is the largest sum, over samples every 0.1 s, of the
RSS of every process of the command's tree (the command, its worker processes, Prefect's embedded
server): shared library pages count once per process, so this overstates the real footprint.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import psutil

from bench.predict_common import (
    DIGITFLOW,
    WORKSPACE,
    bench_registry,
    load_average,
    predict_env,
    write_folder,
)
from flows.predict.shards import DEFAULT_SHARD_SIZE

LIMIT_MB = 1024


def role(process: psutil.Process) -> str:
    command = " ".join(process.cmdline())
    if "uvicorn" in command:
        return "prefect server"
    if "multiprocessing" in command:
        return "workers"
    return "command"


def tree_rss(root: psutil.Process) -> dict[str, int]:
    """RSS in bytes by role, summed over the process tree."""
    totals: dict[str, int] = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            name, rss = role(process), process.memory_info().rss
        except psutil.Error:  # exited between the listing and the reading
            continue
        totals[name] = totals.get(name, 0) + rss
    return totals


def measure(folder: Path, shard_size: int) -> dict:
    output = WORKSPACE / "predict-memory.parquet"
    command = [DIGITFLOW, "predict", str(folder), "--model", bench_registry()]
    command += ["--output", str(output), "--json", "--shard-size", str(shard_size)]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=predict_env(), stdout=subprocess.PIPE, text=True)
    root = psutil.Process(process.pid)
    peak: dict[str, int] = {}
    while process.poll() is None:
        sample = tree_rss(root)
        if sum(sample.values()) > sum(peak.values()):
            peak = sample
        time.sleep(0.1)
    stdout = process.stdout.read() if process.stdout else ""
    if process.returncode != 0:
        raise SystemExit(f"digitflow predict failed with status {process.returncode}")
    summary = json.loads(stdout)
    return {
        "images": summary["scored"] + summary["failed"],
        "shard_size": shard_size,
        "peak_rss_mb": round(sum(peak.values()) / 2**20),
        "by_role_mb": {name: round(rss / 2**20) for name, rss in sorted(peak.items())},
        "images_per_second": summary["images_per_second"],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200_000, help="folder size (200000)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    root = WORKSPACE / "synthetic"
    write_folder(root / "small", args.images // 4)
    write_folder(root / "rest", args.images - args.images // 4)
    small, large = DEFAULT_SHARD_SIZE // 4, DEFAULT_SHARD_SIZE * 4
    runs = [(root / "small", DEFAULT_SHARD_SIZE), (root, DEFAULT_SHARD_SIZE)]
    runs += [(root, small), (root, large)]
    load_before = load_average()
    results = []
    for folder, shard_size in runs:
        result = measure(folder, shard_size)
        results.append(result)
        if not args.json:
            print(
                f"{result['images']:>8,} images, shard {shard_size:>5}: peak RSS "
                f"{result['peak_rss_mb']:>5} MB {result['by_role_mb']}, "
                f"{result['images_per_second']:,.0f} images/s, {result['wall_seconds']} s",
                flush=True,
            )
    worst = max(r["peak_rss_mb"] for r in results)
    if args.json:
        print(json.dumps({"load_average": [load_before, load_average()], "runs": results}))
        return
    print(
        f"\nload average {load_before} -> {load_average()}; largest peak {worst} MB "
        f"(limit {LIMIT_MB} MB: {'met' if worst < LIMIT_MB else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
