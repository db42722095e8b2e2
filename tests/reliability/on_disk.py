"""What a run leaves on disk, as the reliability tests look at it.

image_files(folder)          # the relative paths of the image files under a folder
part_rows(parts)             # rows in a batch prediction's part files so far
checkpoint_epochs(home)      # epochs done by the training checkpoint in a data directory
temporary_files(folder)      # half-written files netcore.io's atomic writes would leave
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from safetensors import SafetensorError, safe_open

from flows.paths import CHECKPOINT_FILE
from netcore.images import is_image_name


def image_files(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and is_image_name(p.name)
    }


def part_rows(parts: Path) -> int:
    return sum(pq.read_metadata(part).num_rows for part in parts.glob("part-*.parquet"))


def checkpoint_epochs(home: Path) -> int:
    """Epochs done by the checkpoint in the data directory's run folder (0: none yet)."""
    for path in (home / "runs").glob(f"*/{CHECKPOINT_FILE}"):
        try:
            with safe_open(str(path), framework="numpy") as checkpoint:
                return json.loads(checkpoint.metadata()["state"])["epochs_done"]
        except (OSError, SafetensorError):
            return 0  # replaced between the listing and the open: look again
    return 0


def temporary_files(folder: Path) -> list[Path]:
    """Half-written files netcore.io's atomic writes would leave (".<name>.<random>.tmp")."""
    return sorted(folder.rglob(".*.tmp"))
