"""Batch-prediction throughput: `digitflow predict` on the 10,000 MNIST test PNG files, next to
the raw Pillow decode rate of the same files, measured in the same run.

    make bench                                      # or:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE DIGITFLOW_MNIST_SOURCE=../shared/data/mnist \\
        .venv/bin/python -m bench.predict_speed [--repeats 3] [--json]

Each repeat measures, one after the other (so a busy machine slows all alike):
  raw decode, 1 process     Image.open(path).load() for every file
  raw decode, 2 processes   the same, each process half of the files (pool started beforehand)
  digitflow predict         a subprocess with its defaults (thread runner, one worker process per
                            core): images/s over the flow itself (Prefect start-up excluded: the
                            flow's own clock, from its summary), over the whole command's wall
                            time (Prefect start-up included), and while scoring only (images over
                            the summed shard time per worker: the flow without its fixed costs,
                            what a large folder approaches)
It reports the median and the best of each, and the flow's rate as a fraction of the two-process
raw decode rate (target >= 80%), with the load average: other work on the machine shows there,
and the best of the repeats is the least disturbed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

from PIL import Image

from bench.predict_common import WORKSPACE, load_average, run_predict, write_folder

TARGET = 0.8


def decode(paths: list[str]) -> int:
    for path in paths:
        with Image.open(path) as image:
            image.load()
    return len(paths)


def raw_rate(paths: list[str], pool: ProcessPoolExecutor | None) -> float:
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
    args = parser.parse_args()

    folder = write_folder(WORKSPACE / "mnist-test-png", 10_000)
    paths = sorted(str(p) for p in folder.rglob("*.png"))
    output = WORKSPACE / "predict-speed.parquet"
    results: dict[str, list[float]] = {
        "raw_1": [],
        "raw_2": [],
        "flow": [],
        "command": [],
        "scoring": [],
    }
    load_before = load_average()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(decode, [paths[:10], paths[10:20]]))  # started and warm
        decode(paths)  # the files in the page cache, as for every later read
        for repeat in range(args.repeats):
            results["raw_1"].append(raw_rate(paths, None))
            results["raw_2"].append(raw_rate(paths, pool))
            summary, wall = run_predict(folder, output)
            assert summary["scored"] == len(paths), summary
            results["flow"].append(summary["images_per_second"])
            results["command"].append(len(paths) / wall)
            workers = min(summary["shards"], report_cores())
            results["scoring"].append(len(paths) / (summary["shard_seconds"] / workers))
            print(
                f"repeat {repeat + 1}: raw 1 process {results['raw_1'][-1]:,.0f}/s, "
                f"2 processes {results['raw_2'][-1]:,.0f}/s; flow {results['flow'][-1]:,.0f}/s "
                f"({summary['seconds']:.2f} s), command {results['command'][-1]:,.0f}/s "
                f"({wall:.1f} s), scoring only {results['scoring'][-1]:,.0f}/s",
                flush=True,
            )
    medians = {name: statistics.median(values) for name, values in results.items()}
    best = {name: max(values) for name, values in results.items()}
    report = {
        "images": len(paths),
        "cores": report_cores(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "median_images_per_second": {k: round(v) for k, v in medians.items()},
        "best_images_per_second": {k: round(v) for k, v in best.items()},
        "flow_vs_raw_2": {
            "median": round(medians["flow"] / medians["raw_2"], 3),
            "best": round(best["flow"] / best["raw_2"], 3),
        },
        "scoring_vs_raw_2": {
            "median": round(medians["scoring"] / medians["raw_2"], 3),
            "best": round(best["scoring"] / best["raw_2"], 3),
        },
        "target": TARGET,
        "runs": {k: [round(v) for v in values] for k, values in results.items()},
    }
    if args.json:
        print(json.dumps(report))
        return
    rows = [
        ("raw Pillow decode, 1 process", "raw_1"),
        ("raw Pillow decode, 2 processes", "raw_2"),
        ("digitflow predict: the flow", "flow"),
        ("  while scoring (no fixed costs)", "scoring"),
        ("  whole command (with start-up)", "command"),
    ]
    print(
        f"\n{len(paths):,} PNG files, {report['cores']} cores, load average "
        f"{load_before} -> {report['load_average_after']} (1, 5, 15 min)\n"
        f"{'images/s':>45} {'median':>9} {'best':>9}"
    )
    for label, key in rows:
        print(f"  {label:<40} {medians[key]:>9,.0f} {best[key]:>9,.0f}")
    for name in ("flow", "scoring"):
        ratio = report[f"{name}_vs_raw_2"]
        verdict = "met" if ratio["median"] >= TARGET else "NOT met"
        print(
            f"  {name} / 2-process decode: median {ratio['median']:.0%}, best {ratio['best']:.0%} "
            f"(target >= {TARGET:.0%}: {verdict})"
        )


def report_cores() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
