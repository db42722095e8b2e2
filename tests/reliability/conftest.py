"""Fixtures of the reliability suite (tests/reliability/, docs/reliability.md).

- `prefect_api`: the URL of the session's Prefect test server; CLI processes given it (via
  `cli_env`) use it instead of each starting an embedded server (~10 s apiece).
- `quick_training`: `digitflow train` options for a short real run on the 2,000/500-row subset.
- `reference`: one uninterrupted `digitflow train` run with those options (its registry, v1),
  the baseline for the resume test and the model the prediction tests score with; it runs
  confined, and records what it wrote outside its data directory.
- `digit_folder`: real MNIST digits as PNG files in nested folders, plus broken, hostile and
  non-image files and awkward names.
- `fault_rng`: the random generator choosing kill moments; its seed is printed, and
  RELIABILITY_SEED=N replays a run.
"""

from __future__ import annotations

import io
import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from netcore.mnist import read_parquet
from tests.builders import png_declaring
from tests.reliability.footprint import changes, confined_env, outside, snapshot
from tests.reliability.processes import digitflow

EPOCHS = 8
SMALL_CONFIG = """\
[data]
train_rows = 2000
test_rows = 500

[training]
augment_distortions = 0   # distorted copies cost seconds; shifts and shuffles stay random
"""
DIGITS = 240  # PNG files in digit_folder


@pytest.fixture(scope="session")
def prefect_api(prefect_harness: None) -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)


@pytest.fixture(scope="session")
def quick_training(small_mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    config = tmp_path_factory.mktemp("config") / "small.toml"
    config.write_text(SMALL_CONFIG)
    return [
        "train",
        *("--source", str(small_mnist_dir), "--config", str(config)),
        *("--epochs", str(EPOCHS), "--hidden", "32", "--seed", "7"),
        *("--min-accuracy", "0.5", "--json"),
    ]


@pytest.fixture(scope="session")
def reference(
    prefect_api: str,
    quick_training: list[str],
    small_mnist_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The uninterrupted run, confined (tests/reliability/footprint.py): its --json summary,
    plus `home` and `registry` paths and `written_elsewhere`, what it wrote outside its data
    directory (the source folder and the configuration's folder are watched too)."""
    root = tmp_path_factory.mktemp("reference")
    env, cwd = confined_env(root, prefect_api)
    config = Path(quick_training[quick_training.index("--config") + 1]).parent
    watched = (root, small_mnist_dir, config)
    before = snapshot(*watched)
    done = digitflow(*quick_training, env=env, cwd=cwd)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["published"] and summary["version"] == "v1", summary
    written = changes(before, snapshot(*watched))
    home = root / "data"
    return summary | {
        "home": home,
        "registry": home / "models",
        "written_elsewhere": outside(written, [home], temporary=root / "tmp"),
    }


@pytest.fixture(scope="session")
def fault_rng() -> np.random.Generator:
    seed = int(os.environ.get("RELIABILITY_SEED") or secrets.randbits(32))
    print(f"\nreliability: kill moments drawn with RELIABILITY_SEED={seed}")
    return np.random.default_rng(seed)


def broken_files(png: bytes) -> dict[str, bytes]:
    """Files that are images by name but cannot be scored: each must become one error row."""
    return {
        "broken/empty.png": b"",
        "broken/truncated.png": png[: len(png) // 2],
        "broken/text.jpg": b"this is not a JPEG\n",
        "broken/bomb.png": png_declaring(40_000, 40_000),
        "broken/random.webp": np.random.default_rng(0).integers(0, 256, 700, np.uint8).tobytes(),
    }


SKIPPED = {"notes.txt": b"not an image\n", "digits/README": b"readme\n"}


@pytest.fixture(scope="session")
def digit_folder(small_mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIGITS real test digits as PNG files (names "<index>_<label>.png", some with spaces and
    non-ASCII letters, some upper-case .PNG) in nested folders, broken_files() and SKIPPED."""
    pixels, labels = read_parquet(small_mnist_dir / "test-00000-of-00001.parquet")
    root = tmp_path_factory.mktemp("digits")
    for index in range(DIGITS):
        name = f"{index:04d}_{labels[index]}" + (" é" if index % 7 == 0 else "")
        path = root / "digits" / f"batch {index % 4}" / f"{name}.{'PNG' if index % 5 else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[index]).save(path)
    buffer = io.BytesIO()
    Image.fromarray(pixels[0]).save(buffer, "PNG")
    for name, data in (broken_files(buffer.getvalue()) | SKIPPED).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root
