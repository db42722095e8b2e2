"""Training speed: netcore against PyTorch CPU on the same 784-128-10 network, side by side.

    make bench                                   # or:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python -m bench.train_speed --epochs 6

Both train on the real MNIST training set (DIGITFLOW_MNIST_SOURCE), batch 128, float32, SGD with
momentum 0.9 and weight decay 2e-4, no augmentation, the same shuffles; epochs alternate between
the two (netcore, torch, netcore, ...) so a busy machine slows both alike. For each thread count
it prints per-epoch seconds, the median ratio netcore / PyTorch, and netcore's achieved GFLOP/s
as a fraction of numpy's float32 GEMM peak (a 2048^3 matmul) measured in the same run. Last, the
time to score the 10k test set in memory (scaling + forward + argmax), median of 20 runs.

It also times the two large GEMMs of every step alone (x @ W1 and x^T @ g1, `(128, 784)` by
`(784, 128)`), an epoch's worth, best of 3: no implementation built on numpy's matmul can train
faster than that, so its fraction of the peak is the ceiling for netcore's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from bench.gemm import gemm_peak
from netcore import Network, NetworkConfig, TrainConfig
from netcore.mnist import read_parquet
from netcore.optim import SGD
from netcore.preprocess import normalize
from netcore.trainer import train_epoch

SIZES = (784, 128, 10)


def flops_per_epoch(n: int) -> float:
    """Multiply-adds x 2 of forward, weight gradients and the hidden layer's input gradient."""
    inp, hidden, out = SIZES
    forward = 2 * n * (inp * hidden + hidden * out)
    weight_grads = forward
    hidden_grad = 2 * n * hidden * out
    return forward + weight_grads + hidden_grad


def gemm_only_seconds(x: np.ndarray, batch: int, repeats: int = 3) -> float:
    """Best time of the epoch's two large GEMMs per batch, x @ W1 and x^T @ g1, nothing else."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((SIZES[0], SIZES[1]), dtype=np.float32)
    g1 = rng.standard_normal((batch, SIZES[1]), dtype=np.float32)
    z, dw1 = np.empty((batch, SIZES[1]), np.float32), np.empty_like(w1)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(x) - batch + 1, batch):
            x_batch = x[start : start + batch]
            np.matmul(x_batch, w1, out=z)
            np.matmul(x_batch.T, g1, out=dw1)
        best = min(best, time.perf_counter() - started)
    return best


class TorchPeer:
    """The same network, loss and optimizer in PyTorch, fed the same uint8 batches."""

    def __init__(self, config: TrainConfig, network_config: NetworkConfig):
        torch.manual_seed(config.seed)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(SIZES[0], SIZES[1]),
            torch.nn.ReLU(),
            torch.nn.Linear(SIZES[1], SIZES[2]),
        )
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        self.loss = torch.nn.CrossEntropyLoss()
        self.scale = 1.0 / (255.0 * network_config.pixel_std)
        self.offset = -network_config.pixel_mean / network_config.pixel_std
        self.batch = config.batch_size

    def epoch(self, pixels: np.ndarray, labels: np.ndarray) -> None:
        x_all, y_all = torch.from_numpy(pixels), torch.from_numpy(labels)
        for start in range(0, len(labels), self.batch):
            x = x_all[start : start + self.batch].float() * self.scale + self.offset
            self.optimizer.zero_grad(set_to_none=True)
            self.loss(self.model(x), y_all[start : start + self.batch]).backward()
            self.optimizer.step()


def compare(pixels: np.ndarray, labels: np.ndarray, threads: int, epochs: int) -> dict:
    config = TrainConfig(epochs=epochs, augment_shift=0, schedule="constant", learning_rate=0.05)
    network_config = NetworkConfig(layer_sizes=list(SIZES))
    net = Network(network_config, np.random.default_rng(config.seed))
    optimizer = SGD(net, config.momentum, config.weight_decay)
    peer = TorchPeer(config, network_config)
    rng = np.random.default_rng(0)
    flat = pixels.reshape(len(pixels), -1)
    netcore_s, torch_s = [], []
    with threadpool_limits(threads):
        torch.set_num_threads(threads)
        peak = gemm_peak()
        for epoch in range(epochs):
            order = rng.permutation(len(labels))
            epoch_pixels, epoch_labels = flat[order], labels[order]
            started = time.perf_counter()
            train_epoch(net, optimizer, epoch_pixels, epoch_labels, epoch, config)
            netcore_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            peer.epoch(epoch_pixels, epoch_labels)
            torch_s.append(time.perf_counter() - started)
            print(
                f"  threads={threads} epoch {epoch + 1}: netcore {netcore_s[-1]:.3f} s, "
                f"torch {torch_s[-1]:.3f} s",
                flush=True,
            )
        gemm_s = gemm_only_seconds(normalize(flat, network_config), config.batch_size)
    median_netcore, median_torch = statistics.median(netcore_s), statistics.median(torch_s)
    achieved = flops_per_epoch(len(labels)) / median_netcore / 1e9
    full_batches = len(labels) // config.batch_size
    gemm_flops = 2 * 2 * full_batches * config.batch_size * SIZES[0] * SIZES[1]
    return {
        "threads": threads,
        "netcore_s": median_netcore,
        "torch_s": median_torch,
        "ratio": median_netcore / median_torch,
        "gflops": achieved,
        "peak_gflops": peak,
        "fraction_of_peak": achieved / peak,
        "gemm_s": gemm_s,
        "gemm_fraction_of_peak": gemm_flops / gemm_s / 1e9 / peak,
    }


def scoring_ms(pixels: np.ndarray, threads: int, repeats: int = 20) -> float:
    """Median milliseconds to turn the test set's uint8 pixels into predicted labels."""
    net = Network(NetworkConfig(layer_sizes=list(SIZES)), np.random.default_rng(0))
    times = []
    with threadpool_limits(threads):
        for _ in range(repeats):
            started = time.perf_counter()
            net.predict(normalize(pixels, net.config))
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=6, help="epochs per framework and thread count"
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument(
        "--source", default=os.environ.get("DIGITFLOW_MNIST_SOURCE", "../shared/data/mnist")
    )
    args = parser.parse_args()

    pixels, labels = read_parquet(Path(args.source) / "train-00000-of-00001.parquet")
    test_pixels, _ = read_parquet(Path(args.source) / "test-00000-of-00001.parquet")
    blas = [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpool_info()]
    print(f"numpy {np.__version__}, BLAS {blas}; torch {torch.__version__}")
    print(
        "OPENBLAS_CORETYPE="
        f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
        f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')}"
    )
    results = [compare(pixels, labels, threads, args.epochs) for threads in args.threads]
    print(
        "\n| threads | netcore s/epoch | PyTorch s/epoch | netcore / PyTorch | netcore GFLOP/s "
        "| GEMM peak GFLOP/s | fraction of peak | large GEMMs alone s/epoch | their fraction |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['threads']} | {r['netcore_s']:.3f} | {r['torch_s']:.3f} | {r['ratio']:.2f} "
            f"| {r['gflops']:.0f} | {r['peak_gflops']:.0f} | {r['fraction_of_peak']:.0%} "
            f"| {r['gemm_s']:.3f} | {r['gemm_fraction_of_peak']:.0%} |"
        )
    for threads in args.threads:
        print(
            f"\nscoring the {len(test_pixels)} test images in memory, {threads} thread(s): "
            f"{scoring_ms(test_pixels, threads):.1f} ms (median of 20)"
        )


if __name__ == "__main__":
    main()
