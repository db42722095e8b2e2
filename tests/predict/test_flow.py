"""The batch-prediction flow under a real Prefect API (the session harness): a folder of real
MNIST digits in several formats and layouts, broken and hostile files, non-images and a symlink
out of the folder, scored by a published version with the thread runner (worker processes), with
Dask on a LocalCluster, and from an fsspec URL."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flows.predict.output import SCHEMA
from netcore.mnist import read_parquet
from tests.builders import png_claiming

DIGITS = 24


@pytest.fixture(scope="module")
def folder(small_mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """digits/NN.png (as MNIST); the same digits as dark ink on a larger white sheet in PNG,
    BMP, GIF and TIFF (the same 28x28 input after normalization); hostile files; others."""
    pixels, _ = read_parquet(small_mnist_dir / "test-00000-of-00001.parquet")
    root = tmp_path_factory.mktemp("scans")
    outside = tmp_path_factory.mktemp("outside")
    (root / "digits").mkdir()
    (root / "paper" / "deeper").mkdir(parents=True)
    same_as = {}
    for index, digit in enumerate(pixels[:DIGITS]):
        Image.fromarray(digit).save(root / "digits" / f"{index:02d}.png")
        extension = [".png", ".bmp", ".gif", ".TIFF"][index % 4]
        scan = f"paper/deeper/{index:02d}{extension}"
        paper = Image.new("L", (44, 40), 255)  # dark ink on a larger white sheet, off-centre
        paper.paste(Image.fromarray(255 - digit), (index % 16, 3))
        paper.save(root / scan)
        same_as[scan] = f"digits/{index:02d}.png"
    hostile = {
        "broken/empty.png": b"",
        "broken/text.png": b"not an image at all\n",
        "broken/random.jpg": np.random.default_rng(0).bytes(3000),
        "broken/truncated.png": (root / "digits" / "00.png").read_bytes()[:80],
        "broken/bomb.png": png_claiming(40000, 40000),  # 1.6 GB decoded; a few hundred bytes
    }
    (root / "broken").mkdir()
    for name, data in hostile.items():
        (root / name).write_bytes(data)
    (root / "README.txt").write_text("scanned on Tuesday")
    (outside / "secret.png").write_bytes((root / "digits" / "00.png").read_bytes())
    os.symlink(outside / "secret.png", root / "escape.png")
    return {"root": root, "same_as": same_as, "hostile": hostile}


def image_count() -> int:
    return 2 * DIGITS + 5


def check_output(rows: list[dict], folder: dict) -> None:
    by_path = {row["path"]: row for row in rows}
    assert len(rows) == len(by_path) == image_count()  # one row per image file, exactly once
    assert "escape.png" not in by_path and "README.txt" not in by_path
    for name in folder["hostile"]:
        assert by_path[name]["label"] is None and by_path[name]["error"], name
    assert "refused without decoding" in by_path["broken/bomb.png"]["error"]
    for scan, original in folder["same_as"].items():
        assert by_path[scan]["error"] is None
        assert by_path[scan]["label"] == by_path[original]["label"], scan
    assert {row["model_version"] for row in rows} == {"v1"}
    # Asked for by registry alone: the default alias, production (latest until a promotion).
    assert {row["model_alias"] for row in rows} == {"production"}


def test_predict_flow_with_worker_processes(
    prefect_harness: None, untrained_registry: str, folder: dict, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client

    from flows.predict.flow import ARTIFACT_KEY, predict_flow

    output = tmp_path / "predictions.parquet"
    summary = predict_flow(
        str(folder["root"]), model=untrained_registry, output=str(output), workers=2, shard_size=20
    )
    check_output(pq.read_table(output).to_pylist(), folder)
    assert (summary["scored"], summary["failed"]) == (2 * DIGITS, 5)
    assert summary["skipped"] == 2
    assert summary["skipped_reasons"] == {"not an image": 1, "link out of the folder": 1}
    assert sum(summary["histogram"].values()) == 2 * DIGITS
    assert summary["model_version"] == "v1" and summary["images"] == image_count()
    assert summary["model_alias"] == "production"
    # Each task spreads its shard over both workers: shards of 20 one after the other, the last
    # one the rest (53 files: 20, 20, 13; not rounds of 2 shards, the last cut evenly into 7 + 6,
    # as for tasks that run where they are).
    assert image_count() == 53 and summary["shards"] == math.ceil(image_count() / 20)
    assert not (tmp_path / "predictions.parquet.parts").exists()
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    pages = [a.data for a in artifact if a.key == ARTIFACT_KEY]
    assert pages and "| scored | failed | skipped |" in pages[0]
    assert "Model **v1** (asked for as `production`)" in pages[0]


def test_predict_flow_on_a_dask_local_cluster(
    prefect_harness: None, untrained_registry: str, folder: dict, tmp_path: Path
) -> None:
    from prefect_dask import DaskTaskRunner

    from flows.predict.flow import predict_flow

    runner = DaskTaskRunner(
        cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True}
    )
    output = tmp_path / "dask.jsonl"
    summary = predict_flow.with_options(task_runner=runner)(
        str(folder["root"]),
        model=untrained_registry,
        output=str(output),
        workers=2,
        shard_size=10,
        worker_processes=False,
    )
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    check_output(rows, folder)
    assert summary["failed"] == 5


def test_predict_flow_from_an_fsspec_url(
    prefect_harness: None, untrained_registry: str, folder: dict, tmp_path: Path
) -> None:
    """memory:// lives in this process only: one worker, scoring in the task itself."""
    from flows.predict.flow import predict_flow

    memory = fsspec.filesystem("memory")
    for path in sorted(folder["root"].rglob("*")):
        if path.is_file() and not path.is_symlink():
            memory.pipe(f"/scans/{path.relative_to(folder['root'])}", path.read_bytes())
    output = tmp_path / "remote.csv"
    summary = predict_flow(
        "memory://scans", model=untrained_registry, output=str(output), workers=1
    )
    assert (summary["scored"], summary["failed"], summary["skipped"]) == (2 * DIGITS, 5, 1)
    options = pyarrow.csv.ConvertOptions(column_types=SCHEMA, strings_can_be_null=True)
    check_output(pyarrow.csv.read_csv(output, convert_options=options).to_pylist(), folder)
