"""Publishing under faults: publishers SIGKILLed part-way, and publishers racing each other.

Each publisher is a real process (tests/reliability/publisher.py) publishing a real version's
files plus a large padding file, so that copying and hashing take long enough to be interrupted
at a random moment. After every fault the registry must show only complete versions, numbered
v1..vN without gaps, each passing its checksums; the next publish gets v(N+1).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flows.registry.versions import ALIAS, STAGING, list_versions, load_published
from tests.reliability.processes import kill, python_module, start, wait_until

KILLS = 6
MIB = 1 << 20


def make_payload(reference: dict[str, Any], folder: Path, padding: int) -> Path:
    """The reference version's model files, plus `padding` random bytes in figures/."""
    version = Path(reference["artifact"])
    (folder / "figures").mkdir(parents=True)
    for name in ("model.safetensors", "config.json", "metrics.json", "model.onnx"):
        shutil.copyfile(version / name, folder / name)
    rng = np.random.default_rng(0)
    (folder / "figures" / "padding.bin").write_bytes(rng.bytes(padding))
    return folder


def publisher(registry: Path, payload: Path, tag: str, count: int = 1, go: Path | None = None):
    arguments = [str(registry), str(payload), tag, str(count), *([str(go)] if go else [])]
    return start(python_module("tests.reliability.publisher", *arguments), env=None)


def check_registry(registry: Path) -> list[str]:
    """Every vN folder is a complete, verifiable version, numbered from v1 without gaps, and
    `latest` names one of them; returns the versions."""
    folders = sorted(
        (p.name for p in registry.iterdir() if p.name.startswith("v")), key=lambda v: int(v[1:])
    )
    versions = list_versions(str(registry))
    assert folders == versions == [f"v{n}" for n in range(1, len(versions) + 1)], folders
    for version in versions:
        assert load_published(f"{registry}@{version}").version == version  # checksums verified
    if versions:
        assert (registry / ALIAS).read_text().strip() in versions
    return versions


def staging_entries(registry: Path) -> set[str]:
    staging = registry / STAGING
    return {p.name for p in staging.iterdir()} if staging.is_dir() else set()


def test_publishers_killed_part_way_leave_no_partial_version(
    reference: dict[str, Any], fault_rng: np.random.Generator, tmp_path: Path
) -> None:
    payload = make_payload(reference, tmp_path / "payload", padding=48 * MIB)
    registry = tmp_path / "models"
    started = time.monotonic()
    first = publisher(registry, payload, "uninterrupted")
    assert first.communicate(timeout=300)[0].split() == ["v1"]
    duration = time.monotonic() - started  # start-up included: the kill moments span it all

    part_way = 0
    for trial in range(KILLS):
        before = staging_entries(registry)
        process = publisher(registry, payload, f"killed-{trial}")
        wait_until(lambda b=before: staging_entries(registry) > b, process, "a publish starting")
        # The first kill lands as the copy starts; the others at random moments up to the time
        # a whole publish took, so some may come after the commit (which must be complete then).
        time.sleep(0 if trial == 0 else fault_rng.uniform(0, duration))
        out, _ = kill(process)
        part_way += out == ""  # it had not committed a version
        check_registry(registry)
    assert part_way >= 1

    versions = check_registry(registry)
    last = publisher(registry, payload, "after")
    assert last.communicate(timeout=300)[0].split() == [f"v{len(versions) + 1}"]
    assert check_registry(registry)[-1] == (registry / ALIAS).read_text().strip()


@pytest.mark.parametrize("kill_one", [False, True], ids=["all-finish", "one-killed"])
def test_concurrent_publishers_get_distinct_verifiable_versions(
    kill_one: bool, reference: dict[str, Any], fault_rng: np.random.Generator, tmp_path: Path
) -> None:
    """Three processes publish four versions each at the same time (one may be SIGKILLed at a
    random moment): every committed version is complete and made by the process that says so."""
    payload = make_payload(reference, tmp_path / "payload", padding=8 * MIB)
    registry, go = tmp_path / "models", tmp_path / "go"
    tags = ["a", "b", "c"]
    processes = {tag: publisher(registry, payload, tag, 4, go) for tag in tags}
    time.sleep(1.0)  # let the interpreters start and wait at the line
    go.touch()
    victim = tags[int(fault_rng.integers(len(tags)))] if kill_one else None
    claimed = {}
    if victim:
        process = processes.pop(victim)
        wait_until(lambda: bool(list_versions(str(registry))), process, "a first version")
        time.sleep(fault_rng.uniform(0, 0.5))
        claimed |= dict.fromkeys(kill(process)[0].split(), victim)
    for tag, process in processes.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        claimed |= dict.fromkeys(out.split(), tag)

    versions = check_registry(registry)
    if not victim:
        assert len(versions) == 12 and set(claimed) == set(versions)
    for version in versions:
        maker = (registry / version / "README.md").read_text().split()[-1]
        # A killed publisher may have committed a version before it could print it.
        assert claimed.get(version, victim) == maker, (version, maker, claimed)
    for tag in processes:  # those not killed
        assert list(claimed.values()).count(tag) == 4
