"""CNN training speed: netcore against PyTorch CPU on the same network, side by side.

    make bench BENCHMARKS=cnn_speed                # or:
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python -m bench.cnn_speed --epochs 3

Both train the CNN recipe's network (`NetworkConfig.cnn()`, or `--layers JSON`; PyTorch gets the
same layers, channels first as it prefers) on the real MNIST training set
(DIGITFLOW_MNIST_SOURCE): the recipe's batch size, float32, SGD with Nesterov momentum 0.9 and
weight decay, a constant learning rate, no augmentation, the same shuffled batches. Epochs
alternate between the two (netcore, torch, netcore, ...) so a busy machine slows both alike,
for 2 threads and then 1. netcore with N threads is `TrainConfig(threads=N)`: every batch split
into N parts trained in N threads, each with a single-threaded BLAS (netcore.parallel); PyTorch
gets torch.set_num_threads(N). With N > 1, netcore is also timed the plain way, one part and an
N-thread OpenBLAS (`netcore_blas_s`), for comparison. For each thread count it prints seconds per
epoch, the median ratio netcore / PyTorch, and netcore's achieved GFLOP/s against numpy's float32
GEMM peak (a 2048^3 matmul, N BLAS threads) measured in the same run. The training FLOPs of an
epoch count, per image, the forward pass, the weight gradients (as many) and the input gradients
of every parametric layer but the first (as many as their forward).

The ratio is that of each side's fastest epoch: on a machine shared with other work, a load spike
during one epoch can slow either side several-fold (2-thread OpenBLAS and PyTorch alike), and the
fastest epoch is the least disturbed. The medians and every round's own ratio are printed too.

The last line on stdout is one JSON object: `ratio_2_threads`, `ratio_1_thread` and the rest.
"""

from __future__ import annotations

import argparse
import json
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
from netcore.network import build
from netcore.optim import SGD
from netcore.trainer import train_epoch


def training_flops_per_image(config: NetworkConfig) -> int:
    """Forward + weight gradients + input gradients (all parametric layers but the first)."""
    flops = [layer.flops_per_example() for layer in build(config)]
    first = next(f for f in flops if f)
    return 3 * sum(flops) - first


def torch_model(config: NetworkConfig) -> torch.nn.Sequential:
    """The same layers in PyTorch (channels first: (n, 1, 28, 28) in, as PyTorch prefers)."""
    modules, channels = [], config.example_shape[-1]
    for layer, spec in zip(build(config), config.layer_specs(), strict=True):
        kind = spec["type"]
        if kind == "conv2d":
            k = spec["kernel"]
            padding = (k - 1) // 2 if spec["padding"] == "same" else 0
            modules.append(torch.nn.Conv2d(channels, spec["filters"], k, padding=padding))
            channels = spec["filters"]
        elif kind == "dense":
            modules.append(torch.nn.Linear(layer.input_shape[0], spec["units"]))
        else:
            modules.append(
                {
                    "maxpool2d": lambda: torch.nn.MaxPool2d(2),
                    "relu": torch.nn.ReLU,
                    "tanh": torch.nn.Tanh,
                    "flatten": torch.nn.Flatten,
                    "dropout": lambda: torch.nn.Dropout(spec["rate"]),  # noqa: B023 (called now)
                }[kind]()
            )
    return torch.nn.Sequential(*modules)


class TorchPeer:
    """The same network, loss and optimizer in PyTorch, fed the same uint8 batches."""

    def __init__(self, config: TrainConfig, network_config: NetworkConfig):
        torch.manual_seed(config.seed)
        self.model = torch_model(network_config)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=config.learning_rate,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
        self.loss = torch.nn.CrossEntropyLoss()
        self.scale = 1.0 / (255.0 * network_config.pixel_std)
        self.offset = -network_config.pixel_mean / network_config.pixel_std
        self.batch = config.batch_size
        height, width, channels = network_config.example_shape
        self.image_shape = (channels, height, width)

    def epoch(self, pixels: np.ndarray, labels: np.ndarray, epoch: int = 0) -> None:
        x_all, y_all = torch.from_numpy(pixels), torch.from_numpy(labels)
        for start in range(0, len(labels), self.batch):
            x = x_all[start : start + self.batch].float() * self.scale + self.offset
            x = x.reshape(len(x), *self.image_shape)
            self.optimizer.zero_grad(set_to_none=True)
            self.loss(self.model(x), y_all[start : start + self.batch]).backward()
            self.optimizer.step()


class NetcoreRunner:
    """netcore's epochs with `parts` batch parts (threads) and `blas` BLAS threads."""

    def __init__(self, network_config: NetworkConfig, parts: int, blas: int):
        self.config = TrainConfig.cnn(
            augment_shift=0, schedule="constant", learning_rate=0.01, threads=parts
        )
        self.net = Network(network_config, np.random.default_rng(self.config.seed))
        self.optimizer = SGD(
            self.net, self.config.momentum, self.config.weight_decay, self.config.nesterov
        )
        self.blas = blas

    def epoch(self, pixels: np.ndarray, labels: np.ndarray, epoch: int) -> None:
        with threadpool_limits(limits=self.blas, user_api="blas"):
            train_epoch(self.net, self.optimizer, pixels, labels, epoch, self.config)


def compare(
    pixels: np.ndarray,
    labels: np.ndarray,
    network_config: NetworkConfig,
    threads: int,
    epochs: int,
) -> dict:
    runners: dict[str, NetcoreRunner | TorchPeer] = {
        "netcore": NetcoreRunner(network_config, parts=threads, blas=1)
    }
    if threads > 1:
        runners["netcore_blas"] = NetcoreRunner(network_config, parts=1, blas=threads)
    runners["torch"] = TorchPeer(runners["netcore"].config, network_config)
    rng = np.random.default_rng(0)
    flat = pixels.reshape(len(pixels), -1)
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    loads = [os.getloadavg()[0]]
    torch.set_num_threads(threads)
    with threadpool_limits(limits=threads, user_api="blas"):
        peak = gemm_peak()
    for epoch in range(epochs):
        order = rng.permutation(len(labels))
        epoch_pixels, epoch_labels = flat[order], labels[order]
        for name, runner in runners.items():
            started = time.perf_counter()
            runner.epoch(epoch_pixels, epoch_labels, epoch)
            seconds[name].append(time.perf_counter() - started)
        loads.append(os.getloadavg()[0])
        timed = ", ".join(f"{name} {s[-1]:.2f} s" for name, s in seconds.items())
        print(f"  threads={threads} epoch {epoch + 1}: {timed} (load {loads[-1]:.2f})", flush=True)
    best = {name: min(s) for name, s in seconds.items()}
    median = {name: statistics.median(s) for name, s in seconds.items()}
    achieved = training_flops_per_image(network_config) * len(labels) / best["netcore"] / 1e9
    return {
        "threads": threads,
        "netcore_s": best["netcore"],
        "torch_s": best["torch"],
        "ratio": best["netcore"] / best["torch"],
        "netcore_blas_s": best.get("netcore_blas"),
        "median_s": median,
        "ratio_of_medians": median["netcore"] / median["torch"],
        "round_ratios": [n / t for n, t in zip(seconds["netcore"], seconds["torch"], strict=True)],
        "epochs_s": seconds,
        "gflops": achieved,
        "peak_gflops": peak,
        "fraction_of_peak": achieved / peak,
        "load": [min(loads), max(loads)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=3, help="epochs per framework and thread count"
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument(
        "--images", type=int, default=60000, help="train on the first N images (a part epoch)"
    )
    parser.add_argument("--layers", help="layer specs as JSON instead of the CNN recipe's")
    parser.add_argument(
        "--source", default=os.environ.get("DIGITFLOW_MNIST_SOURCE", "../shared/data/mnist")
    )
    args = parser.parse_args()

    pixels, labels = read_parquet(Path(args.source) / "train-00000-of-00001.parquet")
    pixels, labels = pixels[: args.images], labels[: args.images]
    network_config = NetworkConfig.cnn()
    if args.layers:
        network_config = NetworkConfig(layers=json.loads(args.layers))
    blas = [(i["internal_api"], i.get("architecture"), i["num_threads"]) for i in threadpool_info()]
    print(f"numpy {np.__version__}, BLAS {blas}; torch {torch.__version__}")
    print(
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
        f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')}"
    )
    print(
        f"network {network_config.describe()}: {network_config.num_params():,} parameters, "
        f"{network_config.flops_per_image() / 1e6:.2f} MFLOP per image forward, "
        f"{training_flops_per_image(network_config) / 1e6:.2f} training; "
        f"batch {TrainConfig.cnn().batch_size}, {len(labels)} images per epoch"
    )
    results = [
        compare(pixels, labels, network_config, threads, args.epochs) for threads in args.threads
    ]
    print(
        "\n| threads | netcore s/epoch | PyTorch s/epoch | netcore / PyTorch | each round's ratio "
        "| ratio of medians | netcore GFLOP/s | GEMM peak GFLOP/s | fraction of peak "
        "| netcore, N-thread BLAS instead, s/epoch | load average |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        blas = f"{r['netcore_blas_s']:.2f}" if r["netcore_blas_s"] else "-"
        rounds = " ".join(f"{ratio:.2f}" for ratio in r["round_ratios"])
        print(
            f"| {r['threads']} | {r['netcore_s']:.2f} | {r['torch_s']:.2f} | {r['ratio']:.2f} "
            f"| {rounds} | {r['ratio_of_medians']:.2f} | {r['gflops']:.0f} "
            f"| {r['peak_gflops']:.0f} | {r['fraction_of_peak']:.0%} "
            f"| {blas} | {r['load'][0]:.1f}-{r['load'][1]:.1f} |"
        )
    summary = {
        "network": network_config.describe(),
        "parameters": network_config.num_params(),
        "forward_flops_per_image": network_config.flops_per_image(),
        "training_flops_per_image": training_flops_per_image(network_config),
        "batch_size": TrainConfig.cnn().batch_size,
        "images_per_epoch": len(labels),
        "torch": torch.__version__,
        **{f"threads_{r['threads']}": r for r in results},
    }
    for r in results:
        key = "ratio_1_thread" if r["threads"] == 1 else f"ratio_{r['threads']}_threads"
        summary[key] = r["ratio"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
