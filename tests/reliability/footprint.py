"""What a run writes, and where: a confined environment and snapshots of file trees.

    env, cwd = confined_env(root, api_url)    # HOME, TMPDIR, cwd and the tools' homes under root
    before = snapshot(root, source)
    ...run the CLI with env, in cwd...
    written = changes(before, snapshot(root, source))
    assert outside(written, allowed=[root / "data"], temporary=root / "tmp") == []

The run gets its own HOME, temporary folder and working folder (empty), and the homes of the
tools it uses (Prefect, Hugging Face, matplotlib) inside its data directory, as the container
has them (docker/Dockerfile). A file created, changed or deleted anywhere else under the
snapshotted trees is a write outside the data directory and the output location.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.reliability.processes import cli_env

Snapshot = dict[str, tuple[int, int, int]]


def confined_env(root: Path, api_url: str | None) -> tuple[dict[str, str], Path]:
    """(environment, working folder) for a run whose data directory is root/data."""
    data = root / "data"
    for folder in ("home", "tmp", "cwd", "data"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    env = cli_env(
        data,
        api_url,
        HOME=str(root / "home"),
        TMPDIR=str(root / "tmp"),
        PREFECT_HOME=str(data / "prefect"),
        HF_HOME=str(data / "huggingface"),
        MPLCONFIGDIR=str(data / "matplotlib"),
    )
    return env, root / "cwd"


def snapshot(*roots: Path) -> Snapshot:
    """Every entry under `roots` (links not followed): (mode, size, mtime in ns)."""
    entries = {}
    for root in roots:
        for folder, names, files in os.walk(root):
            for name in names + files:
                path = os.path.join(folder, name)
                info = os.lstat(path)
                entries[path] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return entries


def changes(before: Snapshot, after: Snapshot) -> set[str]:
    """Paths created, deleted or modified between two snapshots."""
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def outside(paths: set[str], allowed: list[Path], temporary: Path) -> list[str]:
    """The paths not inside any of the `allowed` folders or files, sorted. The `temporary`
    folder's own timestamp may change (files come and go there); a file left in it may not."""
    return sorted(
        p
        for p in paths
        if Path(p) != temporary and not any(Path(p).is_relative_to(a) for a in allowed)
    )
