"""The registry on object storage: a real S3-compatible server (moto's, a separate process on
127.0.0.1), reached through s3fs with the standard AWS_* variables."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pytest

from flows.registry.store import RegistryError
from flows.registry.versions import list_versions, load_published, publish
from netcore.weights import load_model
from tests.builders import card, make_payload
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
