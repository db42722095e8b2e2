"""The prediction table, its three file formats, atomic writing, and the work folder that makes
batch prediction resumable (flows.predict.output, .score, .shards): plain functions, real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flows.predict.output import (
    SCHEMA,
    atomic_writer,
    listed_names,
    output_format,
    prediction_table,
    read_predictions,
)
from flows.predict.score import ModelPayload, ShardJob, score_shard
from flows.predict.shards import WorkFolder, part_of
from flows.predict.sources import LocalFiles, PredictError
from netcore.config import NetworkConfig
from netcore.errors import DataFileError
from netcore.network import Network


def sample_table() -> pa.Table:
    probabilities = np.random.default_rng(0).dirichlet(np.ones(10), size=3).astype(np.float32)
    return prediction_table(
        ["a.png", "sub/b, with comma.jpg", "broken.png"],
        probabilities,
        [None, None, 'cannot decode ("broken data stream")'],
        "v7",
        "production",
    )


def test_prediction_rows() -> None:
    table = sample_table()
    assert table.schema == SCHEMA
    rows = table.to_pylist()
    assert [row["label"] for row in rows[:2]] == [
        int(np.argmax([row[f"prob_{k}"] for k in range(10)])) for row in rows[:2]
    ]
    assert rows[0]["confidence"] == max(rows[0][f"prob_{k}"] for k in range(10))
    assert rows[2]["label"] is None and rows[2]["confidence"] is None and rows[2]["prob_3"] is None
    assert rows[2]["error"].startswith("cannot decode") and rows[0]["error"] is None
    assert {row["model_version"] for row in rows} == {"v7"}
    assert {row["model_alias"] for row in rows} == {"production"}


def test_output_written_before_model_alias_existed_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "old.csv"
    with atomic_writer(path) as write:
        write(sample_table())
    old = pa.csv.read_csv(path).drop_columns(["model_alias"])
    pa.csv.write_csv(old, path)
    table = read_predictions(path)
    assert table.schema == SCHEMA and table.column("model_alias").null_count == 3
    assert table.column("model_version").to_pylist() == ["v7"] * 3


def read_back(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if suffix == ".csv":
        options = pa.csv.ConvertOptions(column_types=SCHEMA, strings_can_be_null=True)
        return pa.csv.read_csv(path, convert_options=options).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("name", ["out.parquet", "out.CSV", "out.jsonl"])
def test_every_format_holds_the_same_rows(name: str, tmp_path: Path) -> None:
    table = sample_table()
    path = tmp_path / "nested" / name
    with atomic_writer(path) as write:
        write(table.slice(0, 2))
        write(table.slice(2))
    rows, expected = read_back(path), table.to_pylist()
    assert [row["path"] for row in rows] == [row["path"] for row in expected]
    assert [row["error"] for row in rows] == [row["error"] for row in expected]
    for row, want in zip(rows, expected, strict=True):
        for column in ("label", "confidence", "prob_0", "prob_9"):
            assert row[column] == pytest.approx(want[column]), column
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_a_failed_write_leaves_nothing_at_the_destination(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    path.write_bytes(b"the previous complete output")
    with pytest.raises(RuntimeError), atomic_writer(path) as write:
        write(sample_table())
        raise RuntimeError("killed half-way")
    assert path.read_bytes() == b"the previous complete output"
    assert list(tmp_path.iterdir()) == [path]


# Names the OS allows that text formats find awkward: a byte that is not UTF-8 (as os.scandir gives
# it: a lone surrogate), a valid name spelling that byte's escape, a newline, a leading dash, and a
# 250-byte name.
ODD_NAMES = [
    os.fsdecode(b"caf\xe9 \xff.png"),
    "caf\\xe9 \\xff.png",
    "two\nlines.png",
    "-rf.png",
    "x" * 246 + ".png",
]


@pytest.mark.parametrize("name", ["out.parquet", "out.csv", "out.jsonl"])
def test_any_file_name_comes_back_exactly(name: str, tmp_path: Path) -> None:
    probabilities = np.full((len(ODD_NAMES), 10), 0.1)
    table = prediction_table(ODD_NAMES, probabilities, [None, "cannot open", *[None] * 3], "v1")
    with atomic_writer(tmp_path / name) as write:
        write(table)
    read = read_predictions(tmp_path / name)
    assert listed_names(read) == ODD_NAMES
    rows = read.to_pylist()
    # Valid UTF-8 names as they are; the other shown escaped, its bytes in path_hex.
    assert [row["path"] for row in rows[1:]] == ODD_NAMES[1:]
    # The same text, not the same file: path_hex tells them apart.
    assert rows[0]["path"] == rows[1]["path"] == "caf\\xe9 \\xff.png"
    assert bytes.fromhex(rows[0]["path_hex"]) == b"caf\xe9 \xff.png"
    assert [row["path_hex"] for row in rows[1:]] == [None] * 4


def test_output_format_by_extension() -> None:
    assert output_format("x/OUT.Parquet") == ".parquet"
    with pytest.raises(ValueError, match=r"name the file \.parquet, \.csv or \.jsonl"):
        output_format("predictions.xlsx")


def digit_folder(root: Path, count: int) -> list[str]:
    rng = np.random.default_rng(1)
    names = []
    for index in range(count):
        pixels = np.zeros((28, 28), np.uint8)
        pixels[4:24, 10:18] = rng.integers(100, 256, (20, 8))
        name = f"d{index:03d}.png"
        Image.fromarray(pixels).save(root / name)
        names.append(name)
    (root / "bad.png").write_bytes(b"not a png")
    return [*names, "bad.png"]


def test_shards_parts_and_resume(tmp_path: Path) -> None:
    """Score in shards, 'crash' after two, resume: the merged output has each file once, and
    the resumed run scores only what no part holds."""
    images = tmp_path / "images"
    images.mkdir()
    names = digit_folder(images, 9)
    network = Network(NetworkConfig(), np.random.default_rng(0))
    model = ModelPayload.of("v1", network)
    output = tmp_path / "out" / "predictions.csv"
    job = {"input": str(images), "model": "registry/v1"}
    shards = [tuple(names[i : i + 3]) for i in range(0, len(names), 3)]

    work = WorkFolder.next_to(output)
    assert work.start(job, resume=False) == set()
    for number in (0, 1):
        listing = work.listing(number, shards[number])
        score_shard(ShardJob(number, listing, LocalFiles(images), model))
    (Path(work.folder) / ".part-x.parquet.1234.tmp").write_bytes(b"half a part")  # killed mid-write
    work.release()  # as the crashed run's process would, dying

    with pytest.raises(DataFileError, match="belongs to another job"):
        WorkFolder.next_to(output).start({**job, "model": "registry/v2"}, resume=True)
    work = WorkFolder.next_to(output)
    done = work.start(job, resume=True)
    assert done == set(shards[0] + shards[1])
    todo = [name for name in names if name not in done]
    with pytest.raises(OSError), work.merging(output) as merge:
        assert merge.totals.scored == 6  # the earlier parts go in first
        raise OSError("disk full")  # a failure while merging: no output, the parts stay
    assert not output.exists() and len(work.parts()) == 2
    work = WorkFolder.next_to(output)
    assert work.start(job, resume=True) == done
    with work.merging(output) as merge:
        job_2 = ShardJob(2, work.listing(2, todo), LocalFiles(images), model)
        result = score_shard(job_2)
        assert (result.scored, result.failed) == (3, 1)
        merge.add(job_2.part)
        assert not output.exists()  # it appears complete, at the end
    totals = merge.totals

    rows = read_back(output)
    assert sorted(row["path"] for row in rows) == sorted(names)
    assert (totals.scored, totals.failed) == (9, 1)
    assert sum(totals.histogram) == 9
    assert not Path(work.folder).exists()
    bad = next(row for row in rows if row["path"] == "bad.png")
    assert bad["label"] is None and "not an image" in bad["error"]
    assert all(row["error"] is None for row in rows if row["path"] != "bad.png")


@pytest.mark.parametrize("parts", [0, 1, 2])
@pytest.mark.parametrize("name", ["predictions.parquet", "predictions.jsonl"])
def test_the_output_holds_every_part_once(parts: int, name: str, tmp_path: Path) -> None:
    """A Parquet output of one part is that part, moved into place (not read back and written
    again); any other output is the parts written in order; no part at all, an empty output."""
    images = tmp_path / "images"
    images.mkdir()
    names = digit_folder(images, 4)[: 2 * parts]
    model = ModelPayload.of("v1", Network(NetworkConfig(), np.random.default_rng(0)))
    output = tmp_path / name
    work = WorkFolder.next_to(output)
    work.start({"input": str(images)}, resume=False)
    with work.merging(output) as merge:
        for number in range(parts):
            listing = work.listing(number, names[2 * number : 2 * number + 2])
            job = ShardJob(number, listing, LocalFiles(images), model)
            score_shard(job)
            part_bytes = Path(job.part).read_bytes()
            merge.add(job.part)
        assert not output.exists()  # it appears complete, at the end
    assert [row["path"] for row in read_back(output)] == names
    assert (merge.totals.scored, merge.totals.failed) == (len(names), 0)
    if parts == 1 and name.endswith(".parquet"):
        assert output.read_bytes() == part_bytes
    assert not Path(work.folder).exists()


def test_a_fresh_start_clears_only_a_work_folder(tmp_path: Path) -> None:
    output = tmp_path / "out.parquet"
    work = WorkFolder.next_to(output)
    work.start({"input": "a"}, resume=False)
    pq.write_table(sample_table(), part_of(work.listing(0, ["a.png"])))
    work.release()
    assert WorkFolder.next_to(output).start({"input": "a"}, resume=False) == set()
    assert not list(Path(work.folder).glob("part-*"))
    stranger = tmp_path / "mine.parquet.parts"
    stranger.mkdir()
    (stranger / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(DataFileError, match="not a work folder"):
        WorkFolder.next_to(tmp_path / "mine.parquet").start({}, resume=False)
    assert (stranger / "holiday.jpg").exists()


def test_a_name_that_is_not_utf8_is_scored_and_resumed(tmp_path: Path) -> None:
    """Issue 12: such a name failed its whole shard, and every --resume the same way."""
    images = tmp_path / "images"
    images.mkdir()
    names = digit_folder(images, 3)
    odd = os.fsdecode(b"\xff\xfe digit.png")
    os.rename(images / names[0], os.path.join(images, odd))
    names[0] = odd
    model = ModelPayload.of("v1", Network(NetworkConfig(), np.random.default_rng(0)))
    output = tmp_path / "out.parquet"
    work = WorkFolder.next_to(output)
    work.start({"input": str(images)}, resume=False)
    result = score_shard(ShardJob(0, work.listing(0, names[:2]), LocalFiles(images), model))
    assert (result.scored, result.failed) == (2, 0)
    work.release()

    work = WorkFolder.next_to(output)
    assert work.start({"input": str(images)}, resume=True) == set(names[:2])
    with work.merging(output) as merge:
        job = ShardJob(1, work.listing(1, names[2:]), LocalFiles(images), model)
        score_shard(job)
        merge.add(job.part)
    assert sorted(listed_names(read_predictions(output))) == sorted(names)


def test_one_run_at_a_time_owns_an_output(tmp_path: Path) -> None:
    """The lock is the kernel's (flock): the same in two processes as in two objects here."""
    output = tmp_path / "out.parquet"
    first = WorkFolder.next_to(output)
    first.start({"input": "a"}, resume=False)
    pq.write_table(
        sample_table(), Path(first.folder) / "part-1-000000.parquet"
    )  # a live run's part
    second = WorkFolder.next_to(output)
    with pytest.raises(PredictError, match=rf"out.parquet: in use .* \(pid {os.getpid()} on "):
        second.start({"input": "a"}, resume=False)
    assert (Path(first.folder) / "part-1-000000.parquet").exists()  # never deleted under it
    with first.merging(output):
        pass
    assert output.exists() and not output.with_name("out.parquet.lock").exists()
    assert second.start({"input": "a"}, resume=False) == set()  # free again
    second.release()
