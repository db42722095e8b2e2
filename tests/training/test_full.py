"""Slow: the real `digitflow train` command, in its own process with its own embedded Prefect
server and a fresh PREFECT_HOME, on the full MNIST (60,000 / 10,000 rows), twice: the first run
publishes v1, the second reuses the cached download and preparation, says so, and publishes v2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.registry.versions import load_published

DIGITFLOW = str(Path(sys.executable).parent / "digitflow")


def train(home: Path, prefect_home: Path, source: Path) -> tuple[dict, str]:
    env = {
        **os.environ,
        "DIGITFLOW_HOME": str(home),
        "DIGITFLOW_MNIST_SOURCE": str(source),
        "PREFECT_HOME": str(prefect_home),
    }
    for name in ("PREFECT_API_URL", "PREFECT_LOGGING_LEVEL"):
        env.pop(name, None)  # the command's own defaults: embedded server, quiet console
    done = subprocess.run(
        [DIGITFLOW, "train", "--epochs", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=900,
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
