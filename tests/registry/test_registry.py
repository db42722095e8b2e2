"""The model registry: publishing, listing, loading with verification, atomicity, concurrency.

Real files, real fsspec filesystems (local and memory://) and real processes; no Prefect needed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest

from flows.registry.versions import (
    RegistryError,
    list_versions,
    load_published,
    publish,
    split_spec,
    version_summaries,
)
from netcore import Network, NetworkConfig
from tests.builders import card, make_payload

REPO = Path(__file__).resolve().parents[2]


PROVENANCE = {"test_accuracy": 0.9, "config": {"network": {"layer_sizes": [784, 16, 10]}}}


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    folder = tmp_path / "payload"
    folder.mkdir()
    return make_payload(folder)


def test_publish_numbers_versions_and_moves_latest(tmp_path: Path, payload: Path) -> None:
    registry = str(tmp_path / "models")
    assert publish(registry, payload, card, PROVENANCE) == ("v1", f"{registry}/v1")
    assert publish(registry, payload, card, PROVENANCE)[0] == "v2"
    assert list_versions(registry) == ["v1", "v2"]
    assert (tmp_path / "models" / "latest").read_text().strip() == "v2"
    assert not list((tmp_path / "models" / ".staging").iterdir())

    model = load_published(registry)
    assert model.version == "v2" and model.location == f"{registry}/v2"
    assert model.metrics == {"test_accuracy": 0.9}
    assert model.manifest["files"].keys() == {
        "README.md",
        "config.json",
        "figures/curve.png",
        "metrics.json",
        "model.safetensors",
    }
    assert (tmp_path / "models" / "v2" / "README.md").read_text() == "# model v2\n"
    assert load_published(f"{registry}@v1").version == "v1"
    assert load_published(f"{registry}@1").version == "v1"
    assert load_published(f"{registry}/v1").version == "v1"  # a version folder directly
    summaries = version_summaries(registry)
    assert [(s["version"], s["latest"]) for s in summaries] == [("v1", False), ("v2", True)]
    assert summaries[0]["layer_sizes"] == [784, 16, 10]


def test_published_network_matches_the_payload(tmp_path: Path, payload: Path) -> None:
    registry = str(tmp_path / "models")
    publish(registry, payload, card, PROVENANCE)
    expected = Network(NetworkConfig(layer_sizes=[784, 16, 10]), np.random.default_rng(0))
    loaded = load_published(registry).network
    for name, value in expected.params.items():
        np.testing.assert_array_equal(loaded.params[name], value)


def test_published_files_are_read_only(tmp_path: Path, payload: Path) -> None:
    registry = tmp_path / "models"
    publish(str(registry), payload, card, PROVENANCE)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (registry / "v1").rglob("*") if p.is_file()}
    assert set(modes.values()) == {0o444}


def test_memory_filesystem_registry(payload: Path) -> None:
    registry = f"memory://registry-{uuid.uuid4().hex}/models"
    assert publish(registry, payload, card, PROVENANCE)[0] == "v1"
    version, location = publish(registry, payload, card, PROVENANCE)
    assert (version, location) == ("v2", f"{registry.replace('memory://', 'memory:///')}/v2")
    fs = fsspec.filesystem("memory")
    root = registry.removeprefix("memory://")
    assert not fs.exists(f"/{root}/v2/.claim")
    assert load_published(f"{registry}@v1").version == "v1"
    assert load_published(registry).version == "v2"

    fs.pipe_file(f"/{root}/v1/config.json", b'{"network": {}}')
    with pytest.raises(RegistryError, match=r"v1/config.json: checksum mismatch"):
        load_published(f"{registry}@v1")


def test_half_written_remote_version_is_invisible(payload: Path) -> None:
    """On object stores the manifest is written last: without it a version does not exist."""
    registry = f"memory://registry-{uuid.uuid4().hex}/models"
    publish(registry, payload, card, PROVENANCE)
    fs = fsspec.filesystem("memory")
    root = "/" + registry.removeprefix("memory://")
    fs.pipe_file(f"{root}/v2/model.safetensors", b"partial upload")  # a publisher died here
    assert list_versions(registry) == ["v1"]
    assert load_published(registry).version == "v1"
    # The next publisher does not reuse the abandoned number.
    assert publish(registry, payload, card, PROVENANCE)[0] == "v3"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda v: v.joinpath("model.safetensors").write_bytes(b"x" * 100), "checksum mismatch"),
        (lambda v: v.joinpath("figures", "curve.png").unlink(), "figures/curve.png: missing"),
        (lambda v: v.joinpath("manifest.json").write_text("{not json"), "not valid JSON"),
        (
            lambda v: v.joinpath("manifest.json").unlink(),
            "manifest.json: missing; v1 is incomplete",
        ),
    ],
    ids=["changed-weights", "missing-figure", "broken-manifest", "no-manifest"],
)
def test_tampered_version_is_refused(tmp_path: Path, payload: Path, damage, message) -> None:
    registry = tmp_path / "models"
    publish(str(registry), payload, card, PROVENANCE)
    version = registry / "v1"
    for path in version.rglob("*"):
        if path.is_file():
            path.chmod(0o644)  # published files are read-only; someone changes them anyway
    damage(version)
    with pytest.raises(RegistryError, match=message) as error:
        load_published(f"{version}" if "manifest" not in message else f"{registry}@v1")
    assert "\n" not in str(error.value)


def test_changed_weights_named_in_the_error(tmp_path: Path, payload: Path) -> None:
    registry = tmp_path / "models"
    publish(str(registry), payload, card, PROVENANCE)
    weights = registry / "v1" / "model.safetensors"
    weights.chmod(0o644)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one flipped bit in the last weight
    weights.write_bytes(bytes(data))
    with pytest.raises(RegistryError) as error:
        load_published(str(registry))
    assert str(error.value).startswith(f"{weights}: checksum mismatch")


def test_errors_for_missing_registry_and_version(tmp_path: Path, payload: Path) -> None:
    with pytest.raises(RegistryError, match=r"not a model registry \(does not exist"):
        load_published(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match=r"not a model registry \(has no published versions"):
        load_published(str(tmp_path / "empty"))
    publish(str(tmp_path / "models"), payload, card, PROVENANCE)
    with pytest.raises(RegistryError, match=r"no published version v7 \(available: v1\)"):
        load_published(f"{tmp_path / 'models'}@v7")
    with pytest.raises(RegistryError, match="is a version folder itself"):
        load_published(f"{tmp_path / 'models' / 'v1'}@v1")


def test_split_spec() -> None:
    assert split_spec("data/models") == ("data/models", None)
    assert split_spec("data/models@latest") == ("data/models", "latest")
    assert split_spec("s3://bucket/models@v12") == ("s3://bucket/models", "v12")
    assert split_spec("data/models@3") == ("data/models", "v3")
    assert split_spec("/tmp/me@home/models") == ("/tmp/me@home/models", None)
    # Any alias name is a name (whether the registry has it is for resolving to say).
    assert split_spec("data/models@production") == ("data/models", "production")
    assert split_spec("data/models@newest") == ("data/models", "newest")
    for bad in ("v0", "v007", "Newest", "new est", "-x", "0x"):
        with pytest.raises(RegistryError, match="is not a version or an alias"):
            split_spec(f"data/models@{bad}")


def test_an_alias_never_set_is_refused(tmp_path: Path, payload: Path) -> None:
    registry = str(tmp_path / "models")
    publish(registry, payload, card, PROVENANCE)
    with pytest.raises(RegistryError, match="'newest' is not a version, and no alias"):
        load_published(f"{registry}@newest")


def test_failed_publish_leaves_nothing_visible(tmp_path: Path, payload: Path) -> None:
    registry = tmp_path / "models"

    def broken_card(version: str) -> dict[str, str]:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        publish(str(registry), payload, broken_card, PROVENANCE)
    assert list_versions(str(registry)) == []
    assert not list((registry / ".staging").iterdir())
    assert publish(str(registry), payload, card, PROVENANCE)[0] == "v1"


def test_version_taken_meanwhile_moves_to_the_next_number(tmp_path: Path, payload: Path) -> None:
    """Another publisher commits v1 between our choice of number and our rename."""
    registry = tmp_path / "models"
    other = tmp_path / "other"
    other.mkdir()
    make_payload(other, seed=1)
    calls = []

    def racing_card(version: str) -> dict[str, str]:
        if not calls:
            publish(str(registry), other, card, PROVENANCE)  # the other one wins v1
        calls.append(version)
        return card(version)

    assert publish(str(registry), payload, racing_card, PROVENANCE)[0] == "v2"
    assert calls == ["v1", "v2"]
    assert load_published(f"{registry}@v1").manifest["files"]["README.md"]
    assert (registry / "v2" / "README.md").read_text() == "# model v2\n"
    assert (registry / "latest").read_text().strip() == "v2"


PUBLISHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from flows.registry.versions import publish
    registry, payload, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    delay = float(sys.argv[4])
    while not go.exists():
        time.sleep(0.005)
    def card(version):
        time.sleep(delay)
        return {"README.md": f"# {version} from {payload.name}\\n"}
    print(publish(registry, payload, card, {"test_accuracy": 0.9})[0])
    """
)


def _publisher(registry: Path, payload: Path, go: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(registry), str(payload), str(go), str(delay)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_publishers_get_distinct_verifiable_versions(tmp_path: Path) -> None:
    registry, go = tmp_path / "models", tmp_path / "go"
    payloads = []
    for seed in (1, 2):
        folder = tmp_path / f"payload-{seed}"
        folder.mkdir()
        payloads.append(make_payload(folder, seed=seed))
    # Both wait for the same signal, then both pick a number while the other is mid-publish.
    processes = [_publisher(registry, p, go, delay=0.2) for p in payloads]
    time.sleep(1.0)  # let both interpreters start and reach the wait loop
    go.touch()
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    versions = sorted(out.strip() for out, _ in outputs)
    assert versions == ["v1", "v2"]
    assert list_versions(str(registry)) == ["v1", "v2"]
    readmes = set()
    for version in versions:
        model = load_published(f"{registry}@{version}")  # verifies every checksum
        readmes.add((registry / version / "README.md").read_text())
        assert model.version == version
    assert readmes == {"# v1 from payload-1\n", "# v2 from payload-2\n"} or readmes == {
        "# v1 from payload-2\n",
        "# v2 from payload-1\n",
    }
    assert (registry / "latest").read_text().strip() == "v2"


def test_publisher_killed_midway_leaves_no_version(tmp_path: Path, payload: Path) -> None:
    registry, go = tmp_path / "models", tmp_path / "go"
    go.touch()
    process = _publisher(registry, payload, go, delay=60)
    staging = registry / ".staging"
    deadline = time.monotonic() + 60
    while not (staging.is_dir() and any(staging.iterdir())):
        assert time.monotonic() < deadline and process.poll() is None, process.stderr
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert list_versions(str(registry)) == []
    with pytest.raises(RegistryError, match="has no published versions"):
        load_published(str(registry))
    assert publish(str(registry), payload, card, PROVENANCE)[0] == "v1"
