"""Accuracy against training wall time: the default recipe and the recipe without augmentation.

    make bench BENCHMARKS=train_accuracy ARGS="--seeds 0 1 2"

Trains 784-128-10 on the full real MNIST training set (DIGITFLOW_MNIST_SOURCE) with
`TrainConfig()` (what `digitflow train` does with no options) and with augmentation turned off,
and prints each run's test accuracy on the 10k test set and its training wall time (making the
distorted copies included, data loading excluded). Targets: >= 99.0% and >= 98.3% within 60 s.
`--set FIELD=VALUE ...` overrides TrainConfig fields in every recipe (values are JSON), e.g.
`--recipes default --set epochs=150 augment_distortions=0` for the reference +-1 px recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from netcore import Network, NetworkConfig, TrainConfig, train
from netcore.metrics import accuracy
from netcore.mnist import read_parquet
from netcore.preprocess import normalize, pixel_statistics

RECIPES = {
    "default": {},
    "no augmentation": {"augment_shift": 0, "augment_distortions": 0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE")
    parser.add_argument(
        "--source", default=os.environ.get("DIGITFLOW_MNIST_SOURCE", "../shared/data/mnist")
    )
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    pixels, labels = read_parquet(Path(args.source) / "train-00000-of-00001.parquet")
    test_pixels, test_labels = read_parquet(Path(args.source) / "test-00000-of-00001.parquet")
    mean, std = pixel_statistics(pixels)
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "(OpenBLAS default)")
    print(f"BLAS threads: {threads}")

    print("| recipe | seed | epochs | test accuracy | training wall s | of which augmentation s |")
    print("|---|---|---|---|---|---|")
    for recipe in args.recipes:
        accuracies = []
        for seed in args.seeds:
            config = TrainConfig(**{"seed": seed, **RECIPES[recipe], **overrides})
            net = Network(
                NetworkConfig(pixel_mean=mean, pixel_std=std), np.random.default_rng(seed)
            )
            started = time.perf_counter()
            result = train(net, pixels, labels, config)
            seconds = time.perf_counter() - started
            accuracies.append(
                accuracy(test_labels, net.predict(normalize(test_pixels, net.config)))
            )
            print(
                f"| {recipe} | {seed} | {config.epochs} | {accuracies[-1]:.2%} | {seconds:.1f} "
                f"| {result.augmentation_seconds:.1f} |",
                flush=True,
            )
        print(f"| {recipe} | median | | {statistics.median(accuracies):.2%} | | |")


if __name__ == "__main__":
    main()
