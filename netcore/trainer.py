"""The training loop: mini-batch SGD over shuffled, augmented epochs.

    result = train(network, pixels, labels, TrainConfig(epochs=10), on_epoch=print)

`pixels` are uint8 `(n, 784)` (or `(n, 28, 28)`), `labels` integers `(n,)`. Before the first epoch,
`augment_distortions` distorted copies of the training set are made (netcore.augment); each epoch
draws a fresh shuffle, picks every image from the original or one of its copies, and shifts it
(if `augment_shift` > 0), all from generators seeded by `config.seed`; it scales each
batch with the network's pixel scaling, and takes one SGD step per batch with the learning rate
of the schedule at that fractional epoch (with `config.threads` > 1, each batch split across
that many threads, netcore.parallel). With `checkpoint_path`, the whole state is saved after
every epoch, and a later call with the same configuration resumes from it and ends with
bit-identical weights to an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from netcore.augment import EpochBuilder, distorted_copy
from netcore.checkpoint import load_checkpoint, save_checkpoint
from netcore.config import TrainConfig
from netcore.errors import ModelFileError, TrainingDiverged
from netcore.metrics import accuracy
from netcore.network import Network
from netcore.optim import SGD
from netcore.parallel import BatchParallel
from netcore.preprocess import normalize
from netcore.schedules import learning_rate


@dataclass
class EpochStats:
    epoch: int  # 1-based
    loss: float  # mean training loss over the epoch's batches
    train_accuracy: float  # on the (augmented) training batches, before each step
    validation_accuracy: float | None  # on the held-out split, None without one
    validation_loss: float | None  # mean cross-entropy on the held-out split, None without one
    seconds: float  # wall time of the epoch
    learning_rate: float  # rate at the end of the epoch


@dataclass
class TrainResult:
    history: list[EpochStats]
    best_epoch: int  # the epoch whose weights the network ends with
    stopped_early: bool
    resumed_from_epoch: int  # 0 for a fresh run
    augmentation_seconds: float  # making the distorted copies and the epoch pool, before epoch 1


def random_streams(seed: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for (the validation split, the distortions, the epochs' shuffles
    and shifts): each is reproducible on its own, so resuming redraws the same split and copies."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))


def dropout_generator(seed: int, epoch: int) -> np.random.Generator:
    """The generator for one epoch's dropout masks: its own stream per (seed, epoch), so a resumed
    run draws the same masks without any state in the checkpoint. A network without dropout
    draws nothing from it."""
    return np.random.default_rng([seed, epoch])


def split_validation(
    n: int, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation), validation being `fraction` of `n` drawn at random."""
    order = rng.permutation(n)
    n_val = round(n * fraction)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def evaluate_split(network: Network, x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean loss, accuracy) of `network` on scaled inputs `(n, 784)` and labels `(n,)`."""
    logits = network.logits(x, batch_size=len(x))  # in one batch, unless memory needs several
    loss, _ = network.loss(logits, labels, 0.0)
    return loss, accuracy(labels, logits.argmax(axis=1))


def train(
    network: Network,
    pixels: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    on_epoch: Callable[[EpochStats], None] | None = None,
    checkpoint_path: str | Path | None = None,
) -> TrainResult:
    """Train `network` in place; returns the per-epoch history."""
    labels = np.asarray(labels, dtype=np.int64)
    split_rng, distortion_rng, rng = random_streams(config.seed)
    train_idx, val_idx = split_validation(len(labels), config.validation_fraction, split_rng)
    val_x = normalize(pixels[val_idx], network.config) if len(val_idx) else None
    val_y = labels[val_idx]
    train_labels = labels[train_idx]
    train_pixels = pixels[train_idx] if len(val_idx) else np.asarray(pixels)
    side = math.isqrt(network.config.input_size)
    augmentation_started = time.perf_counter()
    copies = [
        distorted_copy(
            train_pixels.reshape(len(train_pixels), side, side),
            distortion_rng,
            config.distortion_degrees,
            config.distortion_scale,
            config.distortion_shear,
            max_stroke=config.stroke_width,
        )
        for _ in range(config.augment_distortions)
    ]
    epochs = EpochBuilder(train_pixels, config.augment_shift, copies)
    augmentation_seconds = time.perf_counter() - augmentation_started

    optimizer = SGD(network, config.momentum, config.weight_decay, config.nesterov)
    history: list[EpochStats] = []
    best: dict[str, np.ndarray] | None = None
    best_accuracy, best_epoch, stale_epochs = -1.0, 0, 0
    start_epoch = 0
    run_identity = {"network": network.config.to_dict(), "training": asdict(config)}

    if checkpoint_path is not None and Path(checkpoint_path).exists():
        tensors, state = load_checkpoint(checkpoint_path)
        if state["identity"] != run_identity:
            raise ModelFileError(
                checkpoint_path,
                "checkpoint was written with a different configuration; delete it to start over",
            )
        for name, value in tensors["param"].items():
            network.params[name][...] = value
        optimizer.velocity[...] = tensors["velocity"]
        best = tensors["best"] or None
        rng.bit_generator.state = state["rng"]
        history = [EpochStats(**h) for h in state["history"]]
        best_accuracy, best_epoch = state["best_accuracy"], state["best_epoch"]
        stale_epochs, start_epoch = state["stale_epochs"], state["epochs_done"]

    n = len(train_labels)
    stopped_early = False
    # The next epoch's images are copied in the background while this one trains.
    planned = epochs.ahead(rng, start_epoch, config.epochs)
    started = time.perf_counter()  # each epoch's clock includes waiting for its images
    for epoch, order, epoch_pixels, rng_state in planned:
        if config.early_stopping_patience and stale_epochs >= config.early_stopping_patience:
            stopped_early = True
            break
        loss_sum, correct = train_epoch(
            network, optimizer, epoch_pixels, train_labels[order], epoch, config
        )

        val_accuracy = val_loss = None
        if val_x is not None:
            val_loss, val_accuracy = evaluate_split(network, val_x, val_y)
            if val_accuracy > best_accuracy:
                best_accuracy, best_epoch, stale_epochs = val_accuracy, epoch + 1, 0
                best = {k: v.copy() for k, v in network.params.items()}
            else:
                stale_epochs += 1
        else:
            best_epoch = epoch + 1
        stats = EpochStats(
            epoch=epoch + 1,
            loss=loss_sum / n,
            train_accuracy=correct / n,
            validation_accuracy=val_accuracy,
            validation_loss=val_loss,
            seconds=time.perf_counter() - started,
            learning_rate=learning_rate(epoch + 1, config),
        )
        history.append(stats)
        if checkpoint_path is not None:
            state = {
                "identity": run_identity,
                "rng": rng_state,
                "history": [asdict(h) for h in history],
                "best_accuracy": best_accuracy,
                "best_epoch": best_epoch,
                "stale_epochs": stale_epochs,
                "epochs_done": epoch + 1,
            }
            save_checkpoint(checkpoint_path, network.params, optimizer.velocity, best, state)
        if on_epoch is not None:
            on_epoch(stats)
        started = time.perf_counter()
    planned.close()  # stops the background thread now, not when collected

    if best is not None:  # keep the best validation epoch's weights
        for name, value in best.items():
            network.params[name][...] = value
    return TrainResult(history, best_epoch, stopped_early, start_epoch, augmentation_seconds)


# Overflow only happens on the way to divergence, which the loss check reports clearly.
@np.errstate(over="ignore", invalid="ignore")
def train_epoch(
    network: Network,
    optimizer: SGD,
    pixels: np.ndarray,
    labels: np.ndarray,
    epoch: int,
    config: TrainConfig,
) -> tuple[float, int]:
    """One SGD step per batch over this epoch's pixels `(n, 784)` uint8, already shuffled (and
    shifted); returns (sum of the batch losses weighted by batch size, correct predictions).
    With `config.threads` > 1 every batch is split across that many threads."""
    model = BatchParallel(network, config.threads) if config.threads > 1 else network
    try:
        return _train_batches(network, model, optimizer, pixels, labels, epoch, config)
    finally:
        if model is not network:
            model.close()


def _train_batches(
    network: Network,
    model: Network | BatchParallel,
    optimizer: SGD,
    pixels: np.ndarray,
    labels: np.ndarray,
    epoch: int,
    config: TrainConfig,
) -> tuple[float, int]:
    batch = config.batch_size
    batches = math.ceil(len(labels) / batch)
    inputs = np.empty((batch, network.config.input_size), dtype=network.dtype)
    dropout_rng = dropout_generator(config.seed, epoch)
    loss_sum, correct = 0.0, 0
    for b in range(batches):
        lr = learning_rate(epoch + b / batches, config)
        batch_pixels = pixels[b * batch : (b + 1) * batch]
        x = normalize(batch_pixels, network.config, out=inputs[: len(batch_pixels)])
        y = labels[b * batch : (b + 1) * batch]
        loss, _, logits = model.loss_and_grads(x, y, config.label_smoothing, dropout_rng)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"training diverged in epoch {epoch + 1}: the loss became {loss}. "
                f"Try a lower learning rate (it was {lr:.4g}, peak {config.learning_rate:g})."
            )
        optimizer.step(network.flat_grads, lr)
        loss_sum += loss * len(y)
        correct += int((logits.argmax(axis=1) == y).sum())
    return loss_sum, correct
