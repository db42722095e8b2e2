"""Batch prediction's files on object storage: a real S3-compatible server (moto's, a separate
process on 127.0.0.1) reached through s3fs with the standard AWS_* variables. The output appears
whole or not at all (a multipart upload completed only at the end), the work folder resumes from
the store, and the output's lock is a lease that a second run respects and a dead run's
successor takes over; then the whole flow with its input, output and registry on S3."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flows.predict.lock import LeaseLock, take_output_lock
from flows.predict.output import prediction_table, read_part
from flows.predict.score import ModelPayload, ShardJob, score_shard
from flows.predict.shards import WorkFolder
from flows.predict.sources import FsspecFiles, PredictError, image_source
from flows.registry.store import open_location, writing_stream
from flows.registry.versions import publish
from netcore.config import NetworkConfig
from netcore.network import Network
from netcore.weights import save_model
from tests.servers import S3Server

DIGITS = 12


def s3() -> fsspec.AbstractFileSystem:
    return fsspec.filesystem("s3")


def rows(count: int, start: int = 0) -> pa.Table:
    paths = [f"scan-{index:07d}.png" for index in range(start, start + count)]
    probabilities = np.random.default_rng(start).dirichlet(np.ones(10), size=count)
    return prediction_table(paths, probabilities, [None] * count, "v1")


def test_an_object_appears_whole_or_not_at_all(s3_server: S3Server) -> None:
    """A multipart upload (5 MB parts) is invisible until it completes; an error aborts it."""
    bucket = s3_server.new_bucket()
    fs = fsspec.filesystem("s3", default_block_size=5 * 2**20, skip_instance_cache=True)
    target = f"{bucket}/out/big.parquet"
    with writing_stream(fs, target) as stream, pq.ParquetWriter(stream, rows(1).schema) as writer:
        for start in range(0, 120_000, 20_000):
            writer.write_table(rows(20_000, start))
            fs.invalidate_cache()
            assert not fs.exists(target)  # parts uploaded, nothing at the key
        uploads_started = fs.list_multipart_uploads(bucket)
    assert uploads_started  # it really was a multipart upload
    assert pq.read_metadata(fs.open(target, "rb")).num_rows == 120_000
    assert not fs.list_multipart_uploads(bucket)

    failed = f"{bucket}/out/failed.parquet"
    with pytest.raises(RuntimeError), writing_stream(fs, failed) as stream:
        stream.write(b"x" * 12 * 2**20)
        raise RuntimeError("killed half-way")
    fs.invalidate_cache()
    assert not fs.exists(failed) and not fs.list_multipart_uploads(bucket)


def digits_on_s3(root: str, count: int) -> list[str]:
    rng = np.random.default_rng(1)
    names = []
    for index in range(count):
        pixels = np.zeros((28, 28), np.uint8)
        pixels[4:24, 10:18] = rng.integers(100, 256, (20, 8))
        name = f"batch-{index % 2}/d{index:03d}.png"
        with s3().open(f"{root}/{name}", "wb") as stream:
            Image.fromarray(pixels).save(stream, "PNG")
        names.append(name)
    return names


def test_a_walked_prefix_leaves_no_listing_in_the_cache(s3_server: S3Server) -> None:
    """s3fs keeps every listing it makes (some 3.7 KB a key): the input's walk drops each
    folder's once it is walked, so a run over millions of keys does not hold them all."""
    bucket = s3_server.new_bucket()
    images = {f"in/{folder}/{index:03d}.png" for folder in "abc" for index in range(20)}
    s3().pipe({f"{bucket}/{key}": b"x" for key in [*images, "in/notes.txt"]})
    source = image_source(f"s3://{bucket}/in")
    skipped: Counter = Counter()
    listed = list(source.listing(skipped))
    assert sorted(listed) == sorted(key.removeprefix("in/") for key in images)
    assert skipped == {"not an image": 1}
    fs, _ = open_location(f"s3://{bucket}/in")
    assert [key for key in fs.dircache if key.startswith(f"{bucket}/in")] == []


def test_the_work_folder_on_s3_resumes_from_the_store(s3_server: S3Server) -> None:
    """Score two shards into parts on S3, 'crash', resume: the output on S3 has each file once,
    and the parts, the job and the lease are gone."""
    bucket = s3_server.new_bucket()
    names = digits_on_s3(f"{bucket}/in", 9)
    opener = FsspecFiles(s3(), f"{bucket}/in")
    model = ModelPayload.of("v1", Network(NetworkConfig(), np.random.default_rng(0)))
    output = f"s3://{bucket}/out/predictions.parquet"
    job = {"input": f"s3://{bucket}/in", "model": "registry/v1"}

    work = WorkFolder.next_to(output)
    assert work.folder == f"{output}.parts"
    assert work.start(job, resume=False) == set()
    for number, files in enumerate((names[:3], names[3:6])):
        listing = work.listing(number, files)
        assert listing.startswith(f"s3://{bucket}/out/predictions.parquet.parts/part-")
        score_shard(ShardJob(number, listing, opener, model))
    work.release()  # as the crashed run's process would, dying (its lease then runs out)

    work = WorkFolder.next_to(output)
    done = work.start(job, resume=True)
    assert done == set(names[:6])
    with work.merging(output) as merge:
        listing = work.listing(2, names[6:])
        score_shard(ShardJob(2, listing, opener, model))
        merge.add(listing.removesuffix(".json") + ".parquet")
        s3().invalidate_cache()
        assert not s3().exists(output)  # it appears complete, at the end
    s3().invalidate_cache()
    written = read_part(output)
    assert sorted(written.column("path").to_pylist()) == sorted(names)
    assert merge.totals.scored == 9
    assert s3().find(f"{bucket}/out") == [f"{bucket}/out/predictions.parquet"]


def holder(host: str, pid: int, renewed: float, lease: float = 60.0) -> bytes:
    document = {"pid": pid, "host": host, "since": renewed, "renewed": renewed}
    return json.dumps(document | {"lease_seconds": lease}).encode()


def test_a_lease_refuses_a_second_run_and_is_taken_over_when_its_holder_is_gone(
    s3_server: S3Server,
) -> None:
    bucket = s3_server.new_bucket()
    output = f"s3://{bucket}/out.parquet"
    first = take_output_lock(output)
    assert isinstance(first, LeaseLock)
    with pytest.raises(PredictError, match=r"out.parquet: in use by another .* on .*lease runs"):
        take_output_lock(output)
    first.release()
    assert not s3().find(f"{bucket}/out.parquet.lock")  # nothing left for the next run
    take_output_lock(output).release()  # free again

    # A holder on another machine: refused while its lease runs, taken over once it ran out.
    folder = f"{bucket}/out.parquet.lock"
    s3().pipe_file(f"{folder}/00000007.json", holder("elsewhere", 4242, time.time()))
    with pytest.raises(PredictError, match=r"pid 4242 on elsewhere"):
        take_output_lock(output)
    s3().pipe_file(f"{folder}/00000007.json", holder("elsewhere", 4242, time.time() - 61))
    successor = take_output_lock(output)
    assert isinstance(successor, LeaseLock) and successor.generation == 8
    successor.release()

    # A holder on this machine whose process is gone: taken over at once.
    s3().pipe_file(f"{folder}/00000003.json", holder(socket.gethostname(), 2**22 + 7, time.time()))
    take_output_lock(output).release()


def test_a_holder_that_lost_its_lease_stops_before_its_output_appears(
    s3_server: S3Server,
) -> None:
    """A run stalled past its lease (here: given a lease of 0.5 s that it cannot renew in time)
    loses the output to the next run, notices at its check, and leaves the newer lease alone."""
    bucket = s3_server.new_bucket()
    fs, output = s3(), f"{bucket}/out.parquet"
    stalled = LeaseLock.take(fs, output, output, lease_seconds=0.5)
    stalled.stopped.set()  # it renews no more: as a process stopped by SIGSTOP
    time.sleep(0.6)
    successor = LeaseLock.take(fs, output, output)
    with pytest.raises(PredictError, match="lost its lease on the output"):
        stalled.check()
    stalled.release()
    successor.check()  # still the successor's
    successor.release()


def test_of_runs_racing_for_one_output_exactly_one_gets_it(s3_server: S3Server) -> None:
    output = f"s3://{s3_server.new_bucket()}/out.parquet"
    outcomes: list[str] = []
    go = threading.Event()

    def race() -> None:
        go.wait()
        try:
            take_output_lock(output)
            outcomes.append("took it")
        except PredictError:
            outcomes.append("refused")

    threads = [threading.Thread(target=race) for _ in range(6)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 5 + ["took it"]


def test_the_flow_with_input_output_and_registry_on_s3(
    prefect_harness: None, s3_server: S3Server, tmp_path: Path
) -> None:
    """Worker processes read the images from S3 themselves and write their parts there."""
    from flows.predict.flow import predict_flow

    bucket = s3_server.new_bucket()
    names = digits_on_s3(f"{bucket}/in", DIGITS)
    s3().pipe_file(f"{bucket}/in/notes.txt", b"not an image")
    save_model(Network(NetworkConfig(), np.random.default_rng(0)), tmp_path / "payload")
    registry = f"s3://{bucket}/models"
    publish(registry, tmp_path / "payload", lambda version: {}, {})
    output = f"s3://{bucket}/out/scans.jsonl"
    # Three workers: a pool of its own, started now that the S3 server's variables are set (the
    # pools other tests of this session started would not have them).
    summary = predict_flow(
        f"s3://{bucket}/in", model=registry, output=output, workers=3, shard_size=4
    )
    assert (summary["scored"], summary["failed"], summary["skipped"]) == (DIGITS, 0, 1)
    assert summary["output"] == output and summary["model"] == f"{registry}/v1"
    lines = s3().cat_file(output.removeprefix("s3://")).decode().splitlines()
    assert sorted(json.loads(line)["path"] for line in lines) == sorted(names)
    assert s3().find(f"{bucket}/out") == [f"{bucket}/out/scans.jsonl"]
