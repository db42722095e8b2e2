"""Accuracy against training wall time: a recipe, and the same recipe without augmentation.

    make bench BENCHMARKS=train_accuracy ARGS="--seeds 0 1 2"
    make bench BENCHMARKS=train_accuracy ARGS="--arch cnn --recipes default"

Trains on the full real MNIST training set (DIGITFLOW_MNIST_SOURCE) with an architecture's recipe
(`--arch mlp`, the default: 784-128-10 and `TrainConfig()`, what `digitflow train` does with no
options; `--arch cnn`: `NetworkConfig.cnn()` and `TrainConfig.cnn()`) and with augmentation
turned off, and prints each run's test accuracy on the 10k test set, its training wall time
(making the distorted copies included, data loading excluded) and the load average before and
after it. Targets: MLP >= 99.0% and >= 98.3% within 60 s; CNN >= 99.5% within 5 minutes.
`--set FIELD=VALUE ...` overrides TrainConfig fields in every recipe (values are JSON), e.g.
`--recipes default --set epochs=150 augment_distortions=0` for the reference +-1 px recipe;
`--layers JSON` replaces the CNN's layer specs (for trials of other networks). `--json` adds one
JSON line per run (configs included) for the notes; `--save DIR` keeps each trained model in
`DIR/<arch>-<recipe>-seed<seed>` (e.g. for `bench.outside_digits score`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from netcore import Network, NetworkConfig, save_model, train
from netcore.config import ARCHS, recipe
from netcore.metrics import accuracy
from netcore.mnist import read_parquet
from netcore.preprocess import normalize, pixel_statistics

RECIPES = {
    "default": {},
    "no augmentation": {"augment_shift": 0, "augment_distortions": 0},
}


def load() -> str:
    """The 1-minute load average, as `uptime` shows it."""
    return f"{os.getloadavg()[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCHS, default="mlp")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--layers", help="layer specs as JSON, replacing the CNN recipe's")
    parser.add_argument("--json", action="store_true", help="also print one JSON line per run")
    parser.add_argument("--save", type=Path, help="save every trained model under this folder")
    parser.add_argument(
        "--source", default=os.environ.get("DIGITFLOW_MNIST_SOURCE", "../shared/data/mnist")
    )
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    pixels, labels = read_parquet(Path(args.source) / "train-00000-of-00001.parquet")
    test_pixels, test_labels = read_parquet(Path(args.source) / "test-00000-of-00001.parquet")
    mean, std = pixel_statistics(pixels)
    network_config, base_training = recipe(args.arch, mean, std)
    if args.layers:
        network_config = NetworkConfig(
            layers=json.loads(args.layers), pixel_mean=mean, pixel_std=std
        )
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "(OpenBLAS default)")
    print(f"BLAS threads: {threads}; network {network_config.describe()}")

    print(
        "| recipe | seed | epochs | test accuracy | training wall s | of which augmentation s "
        "| load before / after |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.recipes:
        accuracies = []
        for seed in args.seeds:
            values = {**base_training.to_dict(), "seed": seed, **RECIPES[name], **overrides}
            config = type(base_training)(**values)
            net = Network(network_config, np.random.default_rng(seed))
            load_before = load()
            started = time.perf_counter()
            result = train(net, pixels, labels, config)
            seconds = time.perf_counter() - started
            accuracies.append(
                accuracy(test_labels, net.predict(normalize(test_pixels, net.config)))
            )
            print(
                f"| {name} | {seed} | {config.epochs} | {accuracies[-1]:.2%} | {seconds:.1f} "
                f"| {result.augmentation_seconds:.1f} | {load_before} / {load()} |",
                flush=True,
            )
            if args.save:
                folder = f"{args.arch}-{name.replace(' ', '-')}-seed{seed}"
                save_model(net, args.save / folder, config)
            if args.json:
                row = {
                    "recipe": name,
                    "network": network_config.describe(),
                    "training": config.to_dict(),
                    "test_accuracy": accuracies[-1],
                    "seconds": round(seconds, 1),
                    "epoch_seconds": [round(h.seconds, 2) for h in result.history],
                    "threads": threads,
                    "load": [load_before, load()],
                }
                print(json.dumps(row), flush=True)
        print(f"| {name} | median | | {statistics.median(accuracies):.2%} | | | |")


if __name__ == "__main__":
    main()
