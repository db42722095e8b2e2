"""The registry on object storage: a real S3-compatible server (moto's, a separate process on
127.0.0.1), reached through s3fs with the standard AWS_* variables, by this process and by
publishing and promoting processes racing each other."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pytest

from flows.registry.aliases import read_history
from flows.registry.manifest import verify
from flows.registry.store import RegistryError
from flows.registry.versions import list_versions, load_published, publish, version_number
from netcore.weights import load_model
from tests.builders import card, make_payload
from tests.reliability.processes import DIGITFLOW, python_module, start
from tests.servers import S3Server


def test_publish_and_load_versions_on_s3(s3_server: S3Server, tmp_path: Path) -> None:
    registry = f"s3://{s3_server.new_bucket()}/models"
    first = make_payload(tmp_path / "first", seed=0)
    second = make_payload(tmp_path / "second", seed=1)
    assert publish(registry, first, card, {"test_accuracy": 0.9}) == ("v1", f"{registry}/v1")
    assert publish(registry, second, card, {"test_accuracy": 0.9})[0] == "v2"
    assert list_versions(registry) == ["v1", "v2"]

    fs = fsspec.filesystem("s3")
    assert fs.cat_file(f"{registry.removeprefix('s3://')}/latest").decode().strip() == "v2"
    latest = load_published(registry)  # every checksum verified
    assert latest.version == "v2" and latest.location == f"{registry}/v2"
    expected = load_model(second).weights[0]
    assert np.array_equal(latest.network.weights[0], expected)
    assert load_published(f"{registry}@v1").manifest["files"]["README.md"]["bytes"] > 0

    # A file changed on the store after publishing is refused, naming it by its URL.
    fs.pipe_file(f"{registry.removeprefix('s3://')}/v1/config.json", b"{}")
    with pytest.raises(RegistryError, match=rf"{registry}/v1/config.json: checksum mismatch"):
        load_published(f"{registry}@v1")


def test_concurrent_publishers_on_s3_get_distinct_versions(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """Four processes publishing three versions each into one S3 registry at the same moment:
    twelve distinct, verifiable versions (each number claimed by an exclusive create)."""
    registry = f"s3://{s3_server.new_bucket()}/models"
    payload = make_payload(tmp_path / "payload")
    go = tmp_path / "go"
    processes = {
        tag: start(
            python_module("tests.reliability.publisher", registry, str(payload), tag, "3", str(go)),
            env=None,  # this process's: the S3 server's AWS_* variables included
        )
        for tag in ("a", "b", "c", "d")
    }
    go.touch()
    published = {}
    for tag, process in processes.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        published[tag] = out.split()
    every = sorted((v for versions in published.values() for v in versions), key=version_number)
    assert every == [f"v{n}" for n in range(1, 13)]
    assert list_versions(registry) == every
    fs = fsspec.filesystem("s3")
    root = registry.removeprefix("s3://")
    for tag, versions in published.items():
        for version in versions:
            verify(f"{registry}/{version}")  # every checksum
            assert fs.cat_file(f"{root}/{version}/README.md").decode() == f"{version} by {tag}\n"
    assert sorted(fs.ls(f"{root}/.claims", detail=False)) == sorted(
        f"{root}/.claims/v{n}" for n in range(1, 13)
    )
    assert fs.cat_file(f"{root}/latest").decode().strip() == "v12"


def test_twenty_concurrent_promotes_on_s3(s3_server: S3Server, tmp_path: Path) -> None:
    """Twenty `digitflow models promote` processes against an S3 registry at once (no lock
    there: each history entry is a conditional PUT): twenty entries, one chain, and the alias at
    the last one recorded."""
    registry = f"s3://{s3_server.new_bucket()}/models"
    for seed in (0, 1):
        publish(registry, make_payload(tmp_path / f"payload-{seed}", seed=seed), card, {})
    processes = [
        start(
            [
                *(*DIGITFLOW, "models", "promote", f"v{1 + index % 2}"),
                *("--registry", registry, "--reason", f"process {index}"),
            ],
            env=None,
        )
        for index in range(20)
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    history = read_history(registry)  # verified: numbering, chain, each `from`, the head
    assert sorted(entry["reason"] for entry in history.entries) == sorted(
        f"process {index}" for index in range(20)
    )
    for before, entry in zip(history.entries, history.entries[1:], strict=False):
        assert entry["from"] == before["to"]
    assert history.holder("production") == history.entries[-1]["to"]
    assert load_published(f"{registry}@production").version == history.entries[-1]["to"]
