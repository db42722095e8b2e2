"""`digitflow serve` and prefect.yaml: scheduled runs through a real local Prefect server.

The fast tests run the real command without a reachable server and expect a clear one-line
error that says how to start one. The slow tests share one `prefect server start` (a free port,
its own PREFECT_HOME): `digitflow serve` trains every few seconds on a small real MNIST subset
and scores an inbox folder, until a scheduled run of each completed and a verifiable version is
published; SIGTERM then stops it with exit 0 and the schedules paused. And prefect.yaml deploys
both flows for a process and a docker pool; a process worker runs the training deployment.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from flows.cli.serve import server_problem
from flows.registry.versions import list_versions, load_published
from flows.training.run_config import resolve_run_config
from netcore.config import TrainConfig
from tests.conftest import TEST_FILE

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
PREFECT_YAML = REPO / "prefect.yaml"
TEXT = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
TRAINING = "mnist-training/scheduled"
SKIPPED = "mnist-training-skipped"  # the artifact of a scheduled run with nothing new to learn
INBOX = "batch-predict/inbox"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment minus any Prefect API settings, with a Prefect home of its own (so no
    profile names a server either)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    return env | extra


def serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "digitflow"), "serve", *args],
        cwd=tmp_path,
        env=cli_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(done: subprocess.CompletedProcess, *phrases: str) -> None:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_serve_without_a_server_says_how_to_start_one(tmp_path: Path) -> None:
    done = serve(tmp_path)
    assert_one_line_error(done, "needs a Prefect server", "PREFECT_API_URL", "make server")


def test_serve_with_an_unreachable_server_names_it(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    done = serve(tmp_path, "--check", PREFECT_API_URL=url)
    assert_one_line_error(done, "needs a Prefect server", url, "make server")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--interval", "40", "--cron", "0 3 * * *"), "--cron and --interval both say when"),
        (
            ("--inbox", "in", "--predict-interval", "40", "--predict-cron", "* * * * *"),
            "--predict-cron and --predict-interval both say when",
        ),
    ],
)
def test_serve_refuses_two_schedules_for_one_flow(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    done = serve(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done, message)


def test_serve_refuses_a_bad_cron_expression(tmp_path: Path) -> None:
    done = serve(tmp_path, "--cron", "every night")
    assert done.returncode == 2, done.stderr
    assert "'every night' is not a cron expression" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_config_file_with_the_cnn_schedules_cnn_runs(tmp_path: Path) -> None:
    from flows.cli.serve import deployments

    config = tmp_path / "train.toml"
    config.write_text('[network]\narch = "cnn"\n[training]\nepochs = 3\n')
    run = resolve_run_config({}, config)
    every_minute = {"interval": datetime.timedelta(seconds=60)}
    (training,) = deployments(every_minute, {}, run, inbox=None)
    parameters = training.parameters
    assert (parameters["arch"], parameters["hidden"], parameters["activation"]) == (
        "cnn",
        None,
        None,
    )
    assert parameters["training"] == TrainConfig.cnn(epochs=3).to_dict()
    assert parameters["skip_unchanged"] is True


def wait_for(what: str, check: Callable[[], Any], seconds: float, *processes: subprocess.Popen):
    """Poll `check` until it returns something truthy; fail early if a process died."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for process in processes:
            assert process.poll() is None, f"{process.args[:2]} exited while waiting for {what}"
        result = check()
        if result:
            return result
        time.sleep(1)
    pytest.fail(f"timed out after {seconds} s waiting for {what}")


def api(url: str, path: str, body: dict | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{url}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def completed_scheduled_runs(url: str, deployment: str) -> list[dict]:
    """Runs of `deployment` that the server's scheduler created and that completed."""
    try:
        deployment_id = api(url, f"/deployments/name/{deployment}")["id"]
    except urllib.error.HTTPError as error:
        if error.code == 404:  # not registered yet
            return []
        raise
    body = {
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
        "deployments": {"id": {"any_": [deployment_id]}},
    }
    return [run for run in api(url, "/flow_runs/filter", body) if run["auto_scheduled"]]


def write_inbox(small_mnist_dir: Path, folder: Path, count: int) -> None:
    """The first `count` MNIST test images as PNG files, as a scanner would drop them."""
    rows = pq.read_table(small_mnist_dir / TEST_FILE).slice(0, count).to_pylist()
    folder.mkdir()
    for index, row in enumerate(rows):
        (folder / f"{index:03d}-{row['label']}.png").write_bytes(row["image"]["bytes"])


def make(*args: str, env: dict[str, str], **popen: Any) -> subprocess.Popen:
    """A target of the project's Makefile, as the README shows it, in its own process group."""
    command = ["make", "--no-print-directory", "--silent", "-C", str(REPO), *args]
    return subprocess.Popen(command, env=env, start_new_session=True, **popen)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`make server` (a real `prefect server start`, SQLite in its own PREFECT_HOME) on a free
    local port."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    with (home / "server.log").open("w") as log:
        server = make(
            "server",
            f"PREFECT_PORT={port}",
            env=cli_env(home),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for("the Prefect server", lambda: server_problem(url) is None, 180, server)
            yield url
        finally:
            os.killpg(server.pid, signal.SIGTERM)  # make and the server it started
            server.wait(timeout=60)


def small_training_config(small_mnist_dir: Path, path: Path) -> Path:
    """A TOML training configuration for the small subset: one epoch of a 32-unit network."""
    path.write_text(
        f'[data]\nsource = "{small_mnist_dir}"\ntrain_rows = 0\ntest_rows = 0\n'
        "[network]\nhidden = [32]\n[training]\nepochs = 1\n[publish]\nmin_accuracy = 0.3\n"
    )
    return path


@pytest.mark.slow
def test_serve_trains_on_schedule_and_stops_cleanly(
    prefect_server: str, small_mnist_dir: Path, tmp_path: Path
) -> None:
    url = prefect_server
    port = urllib.parse.urlsplit(url).port
    check = make("serve", "ARGS=--check", f"PREFECT_PORT={port}", env=cli_env(tmp_path), **TEXT)
    output, _ = check.communicate(timeout=120)
    assert check.returncode == 0, output
    assert f"Prefect server at {url} answers" in output
    config = small_training_config(small_mnist_dir, tmp_path / "train.toml")
    write_inbox(small_mnist_dir, tmp_path / "inbox", 20)
    registry = tmp_path / "models"
    command = ["serve", "--interval", "5", "--config", str(config), "--registry", str(registry)]
    serving = subprocess.Popen(
        [str(BIN / "digitflow"), *command, "--inbox", "inbox", "--predict-interval", "5"],
        cwd=tmp_path,
        env=cli_env(tmp_path, PREFECT_API_URL=url, DIGITFLOW_HOME=str(tmp_path / "data")),
        **TEXT,
    )
    try:
        runs = wait_for(
            "a scheduled training run to complete",
            lambda: completed_scheduled_runs(url, TRAINING),
            300,
            serving,
        )
        published = load_published(str(registry))  # verifies every checksum
        assert published.manifest["flow_run"]["id"] in {run["id"] for run in runs}
        assert published.metrics["test_accuracy"] >= 0.3

        # The inbox is scored on the same schedule, with a version that training published.
        wait_for(
            "a scheduled inbox run to complete",
            lambda: completed_scheduled_runs(url, INBOX),
            300,
            serving,
        )
        predictions = pq.read_table(tmp_path / "data" / "predictions" / "inbox.parquet")
        assert predictions.num_rows == 20
        assert predictions.column("error").null_count == 20
        versions = set(predictions.column("model_version").to_pylist())
        assert versions <= set(list_versions(str(registry)))
        assert set(predictions.column("model_alias").to_pylist()) == {"production"}

        # The next scheduled training runs find nothing new to learn: they skip, and say so.
        wait_for(
            "a second scheduled training run",
            lambda: len(completed_scheduled_runs(url, TRAINING)) >= 2,
            300,
            serving,
        )
        assert list_versions(str(registry)) == ["v1"]
        skipped = api(url, "/artifacts/filter", {"artifacts": {"key": {"any_": [SKIPPED]}}})
        assert skipped and "nothing new to learn, production v1" in skipped[0]["data"]

        serving.send_signal(signal.SIGTERM)
        output, _ = serving.communicate(timeout=120)
        assert serving.returncode == 0, output
        assert f"{TRAINING} every 5 s" in output and f"{INBOX} every 5 s" in output, output
        assert "Stopped serving" in output, output
        for name in (TRAINING, INBOX):
            deployment = api(url, f"/deployments/name/{name}")
            assert deployment["paused"], deployment
    finally:
        if serving.poll() is None:
            serving.kill()
            serving.communicate()


def prefect_cli(url: str, cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "prefect"), *args],
        cwd=cwd,
        env=cli_env(cwd, PREFECT_API_URL=url, DIGITFLOW_HOME=str(cwd / "data")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_prefect_yaml_deploys_both_flows_for_workers(
    prefect_server: str, small_mnist_dir: Path, tmp_path: Path
) -> None:
    url = prefect_server
    prefect_cli(url, tmp_path, "work-pool", "create", "digitflow", "--type", "process")
    prefect_cli(url, tmp_path, "work-pool", "create", "digitflow-docker", "--type", "docker")
    prefect_cli(
        url, tmp_path, "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_YAML)
    )
    deployed = {
        "mnist-training/nightly": "flows.training.flow.training_flow",
        "mnist-training/nightly-docker": "flows.training.flow.training_flow",
        "batch-predict/inbox": "flows.predict.flow.predict_flow",
        "batch-predict/inbox-docker": "flows.predict.flow.predict_flow",
    }
    for name, entrypoint in deployed.items():
        assert api(url, f"/deployments/name/{name}")["entrypoint"] == entrypoint
    docker = api(url, "/deployments/name/mnist-training/nightly-docker")
    assert docker["job_variables"]["image"] == "digitflow:local"

    # A process worker runs the training deployment on the small subset and publishes.
    config = small_training_config(small_mnist_dir, tmp_path / "train.toml")
    run = resolve_run_config({"registry": str(tmp_path / "models")}, config)
    params = json.dumps(run.flow_parameters())
    prefect_cli(url, tmp_path, "deployment", "run", "mnist-training/nightly", "--params", params)
    prefect_cli(url, tmp_path, "worker", "start", "--pool", "digitflow", "--run-once")
    assert load_published(str(tmp_path / "models")).version == "v1"
