"""`digitflow predict` as a user runs it: real subprocesses against the session's Prefect API.

The resume test SIGKILLs a run part-way (its whole process group: the CLI and its worker
processes), checks that no output file appeared, and shows that `--resume` completes the output
with every image exactly once, scoring only what the killed run had not finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flows.predict.score import ENGINES
from netcore.config import NetworkConfig
from netcore.mnist import read_parquet
from tests import builders

DIGITFLOW = str(Path(sys.executable).parent / "digitflow")
IMAGES = 1500


@pytest.fixture(scope="module")
def inbox(small_mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """IMAGES real MNIST digits as PNG files in 10 folders, plus a non-image."""
    pixels, _ = read_parquet(small_mnist_dir / "train-00000-of-00001.parquet")
    root = tmp_path_factory.mktemp("inbox")
    for index, digit in enumerate(pixels[:IMAGES]):
        folder = root / f"batch-{index % 10}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(digit).save(folder / f"{index:04d}.png")
    (root / "index.html").write_text("<html></html>")
    return root


@pytest.fixture
def env(prefect_harness: None, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: the session's Prefect API (no embedded server to start)."""
    from prefect.settings import get_current_settings

    return os.environ | {
        "PREFECT_API_URL": str(get_current_settings().api.url),
        "DIGITFLOW_HOME": str(tmp_path / "home"),
    }


def predict(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DIGITFLOW, "predict", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_kill_part_way_then_resume(
    untrained_registry: str, inbox: Path, env: dict, tmp_path: Path
) -> None:
    output = tmp_path / "out" / "inbox.parquet"
    parts = tmp_path / "out" / "inbox.parquet.parts"
    args = [
        str(inbox),
        "--model",
        untrained_registry,
        "--output",
        str(output),
        "--shard-size",
        "20",
    ]
    run = subprocess.Popen(
        [DIGITFLOW, "predict", *args, "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill takes the workers too
    )
    try:
        deadline = time.monotonic() + 300
        while len(list(parts.glob("part-*.parquet"))) < 5:
            assert run.poll() is None, run.stderr.read().decode() if run.stderr else ""
            assert time.monotonic() < deadline, "no part files after 300 s"
            time.sleep(0.01)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert not output.exists()  # never a half-written output
    finished = sum(pq.read_metadata(part).num_rows for part in parts.glob("part-*.parquet"))
    assert 100 <= finished < IMAGES

    done = predict(*args, "--resume", "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    paths = pq.read_table(output, columns=["path"]).column("path").to_pylist()
    assert len(paths) == len(set(paths)) == IMAGES  # no duplicates, no gaps
    assert set(paths) == {p.relative_to(inbox).as_posix() for p in inbox.rglob("*.png")}
    assert summary["resumed"] == finished
    assert summary["images"] == IMAGES - finished  # only what was missing was scored
    assert (summary["scored"], summary["failed"], summary["skipped"]) == (IMAGES, 0, 1)
    assert not parts.exists()


def test_json_summary_and_output_formats(untrained_registry: str, inbox: Path, env: dict) -> None:
    done = predict(str(inbox / "batch-3"), "--model", f"{untrained_registry}@v1", "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    expected = Path(env["DIGITFLOW_HOME"]) / "predictions" / "batch-3.parquet"
    assert summary["output"] == str(expected) and expected.is_file()
    assert (summary["scored"], summary["failed"], summary["skipped"]) == (IMAGES // 10, 0, 0)
    assert set(summary) >= {"scored", "failed", "skipped", "output", "histogram"}
    assert summary["images_per_second"] > 0

    csv = Path(env["DIGITFLOW_HOME"]) / "b3.CSV"
    done = predict(
        str(inbox / "batch-3"), "--model", untrained_registry, "--output", str(csv), env=env
    )
    assert done.returncode == 0, done.stderr
    assert f"scored {IMAGES // 10}, failed 0, skipped 0 with v1 -> {csv}" in done.stdout
    assert csv.read_text().splitlines()[0].startswith('"path","label","confidence","prob_0"')


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{home}/nowhere"], "nowhere: no such folder"),
        (["{inbox}", "--output", "{home}/out.xlsx"], "unknown output format '.xlsx'"),
        (["{inbox}", "--model", "{home}/empty-registry"], "empty-registry"),
        (["{inbox}", "--dask-address", "tcp://x:8786"], "--dask-address needs --task-runner dask"),
    ],
)
def test_user_errors_are_one_line(
    args: list[str], message: str, inbox: Path, env: dict, tmp_path: Path
) -> None:
    filled = [a.format(home=tmp_path, inbox=inbox) for a in args]
    done = predict(*filled, env=env)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("digitflow: error: "), done.stderr
    assert message in lines[0]


@pytest.mark.parametrize("config", [NetworkConfig(), NetworkConfig.cnn()], ids=["mlp", "cnn"])
def test_the_onnx_engine_scores_as_netcore_does(
    config: NetworkConfig, inbox: Path, env: dict, tmp_path: Path
) -> None:
    registry = builders.untrained_registry(tmp_path, config, with_onnx=True)
    tables = {}
    for engine in ENGINES:
        output = tmp_path / f"{engine}.parquet"
        args = ["--model", registry, "--output", str(output), "--engine", engine, "--json"]
        done = predict(str(inbox), *args, env=env)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert (summary["engine"], summary["scored"]) == (engine, IMAGES)
        tables[engine] = pq.read_table(output).sort_by("path")
    netcore, onnx = tables["netcore"], tables["onnx"]
    assert netcore.column("path").equals(onnx.column("path"))

    def probabilities(table: pa.Table) -> np.ndarray:
        return np.stack([table.column(f"prob_{k}").to_numpy() for k in range(10)], axis=1)

    assert np.abs(probabilities(netcore) - probabilities(onnx)).max() <= 1e-5
    # ...computed apart: onnxruntime's sums differ from numpy's in the last bits.
    assert not np.array_equal(probabilities(netcore), probabilities(onnx))
    # The same label wherever the two likeliest classes are further apart than that.
    first, second = np.sort(probabilities(netcore), axis=1)[:, :-3:-1].T
    clear = first - second > 2e-5
    assert clear.mean() > 0.9
    labels = [table.column("label").to_numpy()[clear] for table in (netcore, onnx)]
    assert (labels[0] == labels[1]).all()


def test_the_onnx_engine_needs_a_model_onnx(
    untrained_registry: str, inbox: Path, env: dict, tmp_path: Path
) -> None:
    output = tmp_path / "out.parquet"
    done = predict(
        str(inbox), "--model", untrained_registry, "--output", str(output), "--engine", "onnx",
        env=env,
    )  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("digitflow: error: "), done.stderr
    assert "has no model.onnx: use --engine netcore" in lines[0]
    assert not output.exists() and not Path(f"{output}.parts").exists()
