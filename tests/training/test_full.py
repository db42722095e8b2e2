"""Slow: the real `digitflow train` command, in its own process with its own embedded Prefect
server and a fresh PREFECT_HOME, on the full MNIST (60,000 / 10,000 rows), twice: the first run
publishes v1, the second reuses the cached download and preparation, says so, and publishes v2.
And `digitflow train --arch cnn`, the whole CNN recipe (a few minutes): >= 99.3% on the test set,
a verifiable version whose ONNX model matches netcore on all 10,000 test images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from flows.registry.onnx_export import check_parity
from flows.registry.versions import load_published
from netcore.config import TrainConfig
from netcore.mnist import read_parquet

DIGITFLOW = str(Path(sys.executable).parent / "digitflow")


def train(home: Path, prefect_home: Path, source: Path, *options: str) -> tuple[dict, str]:
    """`digitflow train OPTIONS --json` (by default `--epochs 4`): (its summary, its stderr)."""
    env = {
        **os.environ,
        "DIGITFLOW_HOME": str(home),
        "DIGITFLOW_MNIST_SOURCE": str(source),
        "PREFECT_HOME": str(prefect_home),
    }
    for name in ("PREFECT_API_URL", "PREFECT_LOGGING_LEVEL"):
        env.pop(name, None)  # the command's own defaults: embedded server, quiet console
    done = subprocess.run(
        [DIGITFLOW, "train", *(options or ("--epochs", "4")), "--json"],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout), done.stderr


@pytest.mark.slow
def test_full_mnist_trains_publishes_and_reuses_the_cache(mnist_dir: Path, tmp_path: Path) -> None:
    home, prefect_home = tmp_path / "data", tmp_path / "prefect"
    first, notes = train(home, prefect_home, mnist_dir)
    assert first["published"] and first["version"] == "v1"
    assert first["test_accuracy"] >= 0.97 and first["epochs"] == 4
    assert "download: done (60,000 train, 10,000 test rows" in notes
    model = load_published(str(home / "models"))
    assert model.manifest["data"]["raw"]["test"]["rows"] == 10_000
    assert model.metrics["test_examples"] == 10_000

    second, notes = train(home, prefect_home, mnist_dir)
    assert second["download_cached"] and second["prepare_cached"]
    assert "download: reused the cached copy" in notes
    assert "prepare: reused the cached arrays" in notes
    assert second["version"] == "v2"
    assert second["artifact"] == str((home / "models" / "v2").resolve())
    assert load_published(str(home / "models")).version == "v2"


@pytest.mark.slow
def test_full_mnist_cnn_reaches_99_3_and_publishes_a_verifiable_version(
    mnist_dir: Path, tmp_path: Path
) -> None:
    home = tmp_path / "data"
    summary, notes = train(home, tmp_path / "prefect", mnist_dir, "--arch", "cnn")
    assert summary["published"] and summary["version"] == "v1"
    assert summary["epochs"] == TrainConfig.cnn().epochs
    print(f"CNN recipe: {summary['test_accuracy']:.2%} in {summary['train_seconds']:.0f} s")
    assert summary["test_accuracy"] >= 0.993
    assert "train: 12 epochs in" in notes

    model = load_published(str(home / "models"))  # every checksum verified
    assert model.network.config.arch == "cnn"
    assert model.manifest["config"]["training"] == TrainConfig.cnn().to_dict()
    assert model.metrics["test_accuracy"] == summary["test_accuracy"]
    # The publish stage checked the ONNX model on the whole test set; check it again here, with
    # onnxruntime on the published file.
    assert model.manifest["onnx_max_abs_difference"] <= 1e-5
    test_pixels, _ = read_parquet(mnist_dir / "test-00000-of-00001.parquet")
    onnx_model = onnx.load(Path(summary["artifact"]) / "model.onnx")
    assert check_parity(onnx_model, model.network, test_pixels.reshape(10_000, 784)) <= 1e-5
