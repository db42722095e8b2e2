"""Batch-prediction throughput: `digitflow predict` on the 10,000 MNIST test PNG files, next to
the raw Pillow decode rate of the same files, measured in the same run.

    make bench                                      # or:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE DIGITFLOW_MNIST_SOURCE=../shared/data/mnist \\
        .venv/bin/python -m bench.predict_speed [--repeats 3] [--arch cnn] [--engine onnx] [--json]

`--arch cnn` scores with a version of the CNN recipe instead of the default MLP (target >= 50% of
the 2-process decode rate: the CNN's forward pass costs about 11 times the MLP's). `--engine onnx`
has the command score with onnxruntime on the version's model.onnx (`digitflow predict --engine`).

Each repeat measures, one after the other (so a busy machine slows all alike):
  raw decode, 1 process     Image.open(path).load() for every file
  raw decode, 2 processes   the same, each process half of the files (pool started beforehand)
  raw decode, 2 threads     the same in two threads: why the flow scores in worker processes
  digitflow predict         a subprocess with its defaults (thread runner, one worker process per
                            core): images/s over the flow itself (Prefect start-up excluded: the
                            flow's own clock, from its summary), over the whole command's wall
                            time (Prefect start-up included), and while scoring only (from the
                            first shard submitted to the last merged: the flow without its fixed
                            costs, what a large folder approaches)
It reports the median and the best of each, and the flow's rate as a fraction of the two-process
raw decode rate (target >= 80% with the MLP, >= 50% with the CNN): the verdict uses the median
of each repeat's own ratio, since this machine's speed drifts by tens of percent from minute to
minute and both halves of a repeat are measured seconds apart. The load average shows other
work on the machine. Last, where a worker's time goes: CPU time per image in this process (least
of 9 passes over 2,000 files, so less disturbed by other work) for the raw decode and for the
steps of scoring a shard.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from threadpoolctl import threadpool_limits

from bench.predict_common import (
    WORKSPACE,
    bench_registry,
    load_average,
    run_predict,
    write_folder,
)
from flows.predict.score import ENGINES, ModelPayload, ShardJob, score_shard
from flows.predict.shards import WorkFolder
from flows.predict.sources import LocalFiles
from flows.registry.versions import load_published
from netcore.images import load_digits, read_gray

# The flow's rate against the 2-process raw decode, by architecture.
TARGETS = {"mlp": 0.8, "cnn": 0.5}
# Passes for the CPU cost of each step: the least is the one other work disturbed least.
PASSES = 9


def decode(paths: list[str]) -> int:
    for path in paths:
        with Image.open(path) as image:
            image.load()
    return len(paths)


def raw_rate(paths: list[str], pool: Executor | None) -> float:
    started = time.perf_counter()
    if pool is None:
        decode(paths)
    else:
        list(pool.map(decode, [paths[0::2], paths[1::2]]))
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--arch", choices=sorted(TARGETS), default="mlp", help="score with this recipe's network"
    )
    parser.add_argument(
        "--engine", choices=ENGINES, default="netcore", help="digitflow predict --engine"
    )
    args = parser.parse_args()
    target = TARGETS[args.arch]

    folder = write_folder(WORKSPACE / "mnist-test-png", 10_000)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    output = WORKSPACE / "predict-speed.parquet"
    results: dict[str, list[float]] = {
        "raw_1": [],
        "raw_2": [],
        "raw_2_threads": [],
        "flow": [],
        "command": [],
        "scoring": [],
    }
    load_before = load_average()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=spawn) as pool, ThreadPoolExecutor(2) as threads:
        list(pool.map(decode, [paths[:10], paths[10:20]]))  # started and warm
        decode(paths)  # the files in the page cache, as for every later read
        for repeat in range(args.repeats):
            results["raw_1"].append(raw_rate(paths, None))
            results["raw_2"].append(raw_rate(paths, pool))
            results["raw_2_threads"].append(raw_rate(paths, threads))
            summary, wall = run_predict(folder, output, "--engine", args.engine, arch=args.arch)
            assert summary["scored"] == len(paths), summary
            results["flow"].append(summary["images_per_second"])
            results["command"].append(len(paths) / wall)
            results["scoring"].append(len(paths) / summary["scoring_seconds"])
            print(
                f"repeat {repeat + 1}: raw 1 process {results['raw_1'][-1]:,.0f}/s, "
                f"2 processes {results['raw_2'][-1]:,.0f}/s, "
                f"2 threads {results['raw_2_threads'][-1]:,.0f}/s; "
                f"flow {results['flow'][-1]:,.0f}/s "
                f"({summary['seconds']:.2f} s), command {results['command'][-1]:,.0f}/s "
                f"({wall:.1f} s), scoring only {results['scoring'][-1]:,.0f}/s",
                flush=True,
            )
    medians = {name: statistics.median(values) for name, values in results.items()}
    best = {name: max(values) for name, values in results.items()}

    def ratios(name: str) -> dict[str, float]:
        """Against the 2-process decode: per repeat (the two measured a few seconds apart, so
        a machine whose speed drifts slows both alike), then of the medians and of the bests."""
        paired = [a / b for a, b in zip(results[name], results["raw_2"], strict=True)]
        return {
            "median_of_repeats": round(statistics.median(paired), 3),
            "median": round(medians[name] / medians["raw_2"], 3),
            "best": round(best[name] / best["raw_2"], 3),
        }

    costs = cpu_costs(folder, paths, args.arch, args.engine)
    report = {
        "arch": args.arch,
        "engine": args.engine,
        "images": len(paths),
        "cpu_microseconds_per_image": costs,
        "cores": report_cores(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "median_images_per_second": {k: round(v) for k, v in medians.items()},
        "best_images_per_second": {k: round(v) for k, v in best.items()},
        "flow_vs_raw_2": ratios("flow"),
        "scoring_vs_raw_2": ratios("scoring"),
        "target": target,
        "runs": {k: [round(v) for v in values] for k, values in results.items()},
    }
    if args.json:
        print(json.dumps(report))
        return
    rows = [
        ("raw Pillow decode, 1 process", "raw_1"),
        ("raw Pillow decode, 2 processes", "raw_2"),
        ("raw Pillow decode, 2 threads (the GIL)", "raw_2_threads"),
        ("digitflow predict: the flow", "flow"),
        ("  while scoring (no fixed costs)", "scoring"),
        ("  whole command (with start-up)", "command"),
    ]
    print(
        f"\n{len(paths):,} PNG files, a {args.arch} version ({args.engine}), "
        f"{report['cores']} cores, load average {load_before} -> "
        f"{report['load_average_after']} (1, 5, 15 min)\n"
        f"{'images/s':>45} {'median':>9} {'best':>9}"
    )
    for label, key in rows:
        print(f"  {label:<40} {medians[key]:>9,.0f} {best[key]:>9,.0f}")
    for name in ("flow", "scoring"):
        ratio = report[f"{name}_vs_raw_2"]
        verdict = "met" if ratio["median_of_repeats"] >= target else "NOT met"
        print(
            f"  {name} / 2-process decode: median of the repeats' ratios "
            f"{ratio['median_of_repeats']:.0%}; of the medians {ratio['median']:.0%}, "
            f"of the bests {ratio['best']:.0%} (target >= {target:.0%}: {verdict})"
        )
    print(f"CPU per image in one process (least of {PASSES} passes over 2,000 files):")
    for name, microseconds in costs.items():
        print(f"  {name:<40} {microseconds:>6.1f} us")


def cpu_costs(
    folder: Path, paths: list[str], arch: str = "mlp", engine: str = "netcore"
) -> dict[str, float]:
    """Microseconds of CPU per image (one process; least of PASSES passes over 2,000 files): the
    raw decode; read_gray, one file at a time; load_digits, which reads files as read_gray does
    but unfilters plain PNG rows many files at once, then normalizes MNIST-style; score_shard,
    which is load_digits plus the network and the part file."""
    files = [str(Path(p).relative_to(folder)) for p in paths[:2000]]
    opener = LocalFiles(folder)
    published = load_published(bench_registry(arch))
    work = WorkFolder(WORKSPACE / "cpu-costs.parts")
    work.start({}, resume=False)
    onnx = published.onnx if engine == "onnx" else None
    model = ModelPayload.of("v1", published.network, onnx=onnx)
    job = ShardJob(0, work.listing(0, files), opener, model)

    def grays() -> None:
        for name in files:
            with opener(name) as stream:
                read_gray(stream, name)

    steps = {
        "raw decode (Image.open + load)": lambda: decode(paths[:2000]),
        "read_gray, one file at a time": grays,
        "load_digits (batched decode + MNIST-style)": lambda: load_digits(files, opener),
        "score_shard (+ network and part file)": lambda: score_shard(job),
    }
    # One BLAS thread, as in the worker processes: process_time would count idle BLAS threads.
    with threadpool_limits(1):
        return {name: _least_cpu(step, len(files)) for name, step in steps.items()}


def _least_cpu(step: Callable[[], object], count: int) -> float:
    times = []
    for _ in range(PASSES):
        started = time.process_time()
        step()
        times.append(time.process_time() - started)
    return round(min(times) / count * 1e6, 1)


def report_cores() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
