"""Where a model came from: code version, package versions, clock. Recorded in manifest.json.

The git commit is read from the checkout the code runs from; where there is none (a Docker image),
DIGITFLOW_GIT_COMMIT, set at build time, stands in.
"""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "digitflow",
    "numpy",
    "prefect",
    "datasets",
    "pyarrow",
    "pillow",
    "safetensors",
    "onnx",
    "onnxruntime",
    "fsspec",
    "click",
)


def utc_now(timespec: str = "seconds") -> str:
    """The time in UTC, ISO 8601, to the `timespec` (seconds, milliseconds...)."""
    return datetime.now(UTC).isoformat(timespec=timespec)


def git_state() -> dict[str, str | bool | None]:
    """{"commit": sha or None, "dirty": uncommitted changes or None when unknown}."""
    checkout = Path(__file__).resolve().parents[2]  # flows/registry/provenance.py
    try:
        commit = _git(checkout, "rev-parse", "HEAD")
        dirty = bool(_git(checkout, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return {"commit": os.environ.get("DIGITFLOW_GIT_COMMIT"), "dirty": None}
    return {"commit": commit, "dirty": dirty}


def _git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
