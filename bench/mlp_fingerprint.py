"""The MLP's fingerprint: sha256 of the weights after a short default training run.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.mlp_fingerprint

Trains the default network (784-128-10, pixel scaling measured on the training set, as the
pipeline does) with the default TrainConfig for 3 epochs, seed 0, on the real MNIST training set
(DIGITFLOW_MNIST_SOURCE), saves it with `save_model` and prints the sha256 of
`model.safetensors`. A change to netcore that must leave the MLP bit-identical (same initial
draws, same arithmetic, same file) must leave this hash unchanged; run it before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from netcore import Network, NetworkConfig, TrainConfig, save_model, train
from netcore.mnist import read_parquet
from netcore.preprocess import pixel_statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--source", default=os.environ.get("DIGITFLOW_MNIST_SOURCE", "../shared/data/mnist")
    )
    args = parser.parse_args()
    pixels, labels = read_parquet(Path(args.source) / "train-00000-of-00001.parquet")
    mean, std = pixel_statistics(pixels)
    config = TrainConfig(epochs=args.epochs, seed=args.seed)
    net = Network(NetworkConfig(pixel_mean=mean, pixel_std=std), np.random.default_rng(args.seed))
    train(net, pixels, labels, config)
    with tempfile.TemporaryDirectory() as folder:
        save_model(net, folder, config)
        digest = hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "(OpenBLAS default)")
    print(f"epochs={args.epochs} seed={args.seed} BLAS threads={threads}")
    print(f"model.safetensors sha256 {digest}")


if __name__ == "__main__":
    main()
