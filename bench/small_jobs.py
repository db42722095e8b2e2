"""Small jobs: the whole `digitflow predict` command on a folder of 10 MNIST PNG files, with the
embedded Prefect server and with a running one, beside `python -c "import prefect"`, measured in
the same run.

    make bench BENCHMARKS=small_jobs                  # or:
    DIGITFLOW_MNIST_SOURCE=../shared/data/mnist .venv/bin/python -m bench.small_jobs [--repeats 7]

A Prefect server is started for the "running server" case, as `make server` starts one (`prefect
server start`, its own PREFECT_HOME under /tmp/digitflow-bench), and stopped at the end. Each
repeat runs the three commands one after the other, in a rotating order (so a machine whose speed
drifts slows all three alike); one untimed round first warms the file caches and creates the
embedded server's database. Reported: each one's median and best wall time, and the commands'
times as multiples of `import prefect`'s: the median of each repeat's own ratio (the verdict), and
the ratio of the medians. Targets (issue 15): embedded <= 3.6x, running server <= 1.8x. The last
line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.predict_common import (
    DIGITFLOW,
    WORKSPACE,
    bench_registry,
    load_average,
    mnist_test_pngs,
    predict_env,
    prefect_server,
)

FILES = 10
TARGETS = {"embedded": 3.6, "server": 1.8}


def ten_files() -> Path:
    folder = WORKSPACE / "ten-pngs"
    folder.mkdir(parents=True, exist_ok=True)
    for index, png in enumerate(mnist_test_pngs()[:FILES]):
        (folder / f"{index:02d}.png").write_bytes(png)
    return folder


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats (default 7)")
    args = parser.parse_args()

    folder = ten_files()
    output = WORKSPACE / "small-jobs.parquet"
    predict = [DIGITFLOW, "predict", str(folder), "--model", bench_registry()]
    predict += ["--output", str(output)]
    embedded_env = predict_env()
    embedded_env.pop("PREFECT_API_URL", None)
    load_before = load_average()
    with prefect_server() as url:
        commands = {
            "import_prefect": ([sys.executable, "-c", "import prefect"], embedded_env),
            "embedded": (predict, embedded_env),
            "server": (predict, embedded_env | {"PREFECT_API_URL": url}),
        }
        for command, env in commands.values():  # caches warm, the embedded database created
            timed(command, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        names = list(commands)
        for repeat in range(args.repeats):
            for name in names[repeat % 3 :] + names[: repeat % 3]:
                times[name].append(timed(*commands[name]))
            print(
                f"repeat {repeat + 1}: "
                + ", ".join(f"{name} {values[-1]:.2f} s" for name, values in times.items()),
                flush=True,
            )
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = {}
    for name in TARGETS:
        paired = [a / b for a, b in zip(times[name], times["import_prefect"], strict=True)]
        ratios[name] = {
            "median_of_repeats": round(statistics.median(paired), 2),
            "of_medians": round(medians[name] / medians["import_prefect"], 2),
        }
    report = {
        "files": FILES,
        "repeats": args.repeats,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "median_seconds": {name: round(value, 3) for name, value in medians.items()},
        "best_seconds": {name: round(min(values), 3) for name, values in times.items()},
        "ratio_to_import_prefect": ratios,
        "targets": TARGETS,
        "runs": {name: [round(value, 3) for value in values] for name, values in times.items()},
    }
    print(
        f"\n{FILES} PNG files, load average {load_before} -> {report['load_average_after']}\n"
        f"{'seconds':>44} {'median':>7} {'best':>6}"
    )
    labels = {
        "import_prefect": 'python -c "import prefect"',
        "embedded": "digitflow predict, embedded server",
        "server": "digitflow predict, running server",
    }
    for name, label in labels.items():
        print(f"  {label:<42} {medians[name]:>7.2f} {min(times[name]):>6.2f}")
    for name, target in TARGETS.items():
        ratio = ratios[name]
        verdict = "met" if ratio["median_of_repeats"] <= target else "NOT met"
        print(
            f"  {labels[name]}: {ratio['median_of_repeats']:.2f}x import prefect (median of the "
            f"repeats' ratios; of the medians {ratio['of_medians']:.2f}x); target <= {target}x: "
            f"{verdict}"
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
