"""What the batch-prediction benchmarks share: a folder of real MNIST PNG files, a published
model to score them with, and running `digitflow predict` as a user would.

The files are the Hub's own PNG bytes of the 10,000 MNIST test images (DIGITFLOW_MNIST_SOURCE),
written under /tmp once and reused; nothing here is ever written into the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from flows.paths import ONNX_FILE
from flows.registry.onnx_export import save_onnx, to_onnx
from flows.registry.versions import publish
from netcore.config import recipe
from netcore.network import Network
from netcore.weights import save_model
from tests.servers import free_port

WORKSPACE = Path(tempfile.gettempdir()) / "digitflow-bench"
DIGITFLOW = str(Path(sys.executable).parent / "digitflow")
PREFECT = str(Path(sys.executable).parent / "prefect")
TEST_FILE = "test-00000-of-00001.parquet"


def mnist_test_pngs() -> list[bytes]:
    """The PNG bytes of the 10,000 MNIST test images, as the Hub ships them."""
    source = os.environ.get("DIGITFLOW_MNIST_SOURCE")
    if not source or not (Path(source) / TEST_FILE).is_file():
        sys.exit(f"set DIGITFLOW_MNIST_SOURCE to the MNIST Parquet folder (got {source!r})")
    table = pq.read_table(Path(source) / TEST_FILE, columns=["image"])
    return table.column("image").combine_chunks().field("bytes").to_pylist()


def write_folder(folder: Path, count: int, per_subfolder: int = 10_000) -> Path:
    """`count` PNG files (the MNIST test images, repeated) in subfolders of `per_subfolder`;
    written once: a complete folder is reused."""
    done = folder / ".complete"
    if done.is_file() and done.read_text() == str(count):
        return folder
    pngs = mnist_test_pngs()
    for index in range(count):
        sub = folder / f"part-{index // per_subfolder:03d}"
        if index % per_subfolder == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{index:07d}.png").write_bytes(pngs[index % len(pngs)])
    done.write_text(str(count))
    return folder


def bench_registry(arch: str = "mlp") -> str:
    """A registry with one version: an untrained network of `arch`'s recipe, mlp or cnn
    (scoring costs the same as a trained one's: the same layers, the same arithmetic)."""
    suffix = "" if arch == "mlp" else f"-{arch}"
    registry = WORKSPACE / f"models{suffix}"
    if not (registry / "v1" / ONNX_FILE).is_file():  # none yet, or one from before ONNX files
        shutil.rmtree(registry, ignore_errors=True)
        payload = WORKSPACE / f"payload{suffix}"
        network_config, _ = recipe(arch)
        network = Network(network_config, np.random.default_rng(0))
        save_model(network, payload)
        save_onnx(to_onnx(network), payload / ONNX_FILE)  # for --engine onnx
        publish(str(registry), payload, lambda version: {}, {"note": f"benchmark {arch} model"})
    return str(registry)


def predict_env() -> dict[str, str]:
    """A Prefect home of the benchmark's own (its embedded server's database), quiet."""
    return os.environ | {
        "PREFECT_HOME": str(WORKSPACE / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def run_predict(folder: Path, output: Path, *options: str, arch: str = "mlp") -> tuple[dict, float]:
    """`digitflow predict FOLDER --json` with a version of `arch` in a subprocess: (its
    summary, wall seconds)."""
    command = [DIGITFLOW, "predict", str(folder), "--model", bench_registry(arch)]
    command += ["--output", str(output), "--json", *options]
    started = time.perf_counter()
    done = subprocess.run(command, env=predict_env(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"digitflow predict failed: {done.stderr.strip()}")
    return json.loads(done.stdout), wall


@contextmanager
def prefect_server() -> Iterator[str]:
    """`prefect server start` as `make server` runs it, on a free port; yields its API URL."""
    port = free_port()
    env = predict_env() | {"PREFECT_HOME": str(WORKSPACE / "prefect-server-home")}
    env.pop("PREFECT_API_URL", None)
    command = [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit("the Prefect server did not start")
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())
