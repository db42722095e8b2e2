"""The train stage's logic: a network trained on the prepared arrays, saved in its run folder.

    trained = train_model(prepared, network_config, training, RunFolder.of(key), log=print)
    trained["model_dir"], trained["epochs"], trained["train_seconds"]

netcore's trainer does the work; this puts it in the run folder (the checkpoint after every
epoch, from which a rerun of the same run resumes; the model; the per-epoch history), logs each
epoch through `log`, draws a progress bar on a terminal, and stops after an epoch's checkpoint
if the CLI's Prefect API stopped answering (flows/runtime/api_watch.py).

With `threads` > 1 (the CNN recipe) netcore splits every batch across that many threads, each
meant to run a single-threaded BLAS (netcore/parallel.py); OpenBLAS's thread count is the
process's, so it is held at one while they train, whatever OPENBLAS_NUM_THREADS says (a Prefect
worker does not set it: OpenBLAS then starts a thread per core, and two netcore threads each
driving two BLAS threads made an epoch 4-18 times slower here).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from flows.paths import RunFolder
from flows.registry.provenance import utc_now
from flows.runtime import console
from flows.runtime.api_watch import stop_if_lost
from flows.training.prepare import load_split
from netcore.config import NetworkConfig, TrainConfig
from netcore.io import write_json
from netcore.network import Network
from netcore.trainer import EpochStats, train
from netcore.weights import save_model

RERUN = "run the same command again to resume"


def train_model(
    prepared: dict[str, Any],
    network_config: dict[str, Any],
    training: dict[str, Any],
    run: RunFolder,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Train a network of `network_config` with `training` (both as dicts) on the prepared
    training split; returns where the model is and how training went."""
    config = TrainConfig.from_dict(training)
    network = Network(NetworkConfig.from_dict(network_config), np.random.default_rng(config.seed))
    pixels, labels = load_split(prepared, "train")
    if run.checkpoint.exists():
        console.note(f"train: resuming from the checkpoint in {run.path}", log)

    with console.progress(config.epochs, "train") as bar:

        def on_epoch(stats: EpochStats) -> None:
            log(epoch_line(stats, config.epochs))
            bar.update(1)
            # The epoch's checkpoint is on disk: a safe place to stop if the CLI lost its API.
            stop_if_lost(f"the checkpoint of epoch {stats.epoch} is kept: {RERUN}")

        one_blas_thread = threadpool_limits(1, "blas") if config.threads > 1 else nullcontext()
        started = time.perf_counter()
        with one_blas_thread:
            result = train(
                network, pixels, labels, config, on_epoch, checkpoint_path=run.checkpoint
            )
        seconds = time.perf_counter() - started
        if result.resumed_from_epoch:
            bar.update(result.resumed_from_epoch)
    save_model(network, run.model, config)
    history = [asdict(stats) for stats in result.history]
    write_json(run.history, history)
    return {
        "model_dir": str(run.model),
        "epochs": len(history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from_epoch,
        "train_seconds": round(seconds, 3),
        "final_loss": history[-1]["loss"],
        "finished_at": utc_now(),
    }


def epoch_line(stats: EpochStats, epochs: int) -> str:
    """One epoch as a log line."""
    validation = (
        f", validation accuracy {stats.validation_accuracy:.4f}"
        if stats.validation_accuracy is not None
        else ""
    )
    return (
        f"epoch {stats.epoch}/{epochs}: loss {stats.loss:.4f}, train accuracy "
        f"{stats.train_accuracy:.4f}{validation}, lr {stats.learning_rate:.4g}, "
        f"{stats.seconds:.2f} s"
    )
