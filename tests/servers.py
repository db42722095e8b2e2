"""Real servers for the tests, each a separate process on 127.0.0.1 (never a mock in-process):

    with S3Server.start() as s3:          # moto's standalone S3-compatible server
        s3.env                            # AWS_* variables pointing s3fs / boto at it
        bucket = s3.new_bucket()          # "test-3f2a...": a fresh, empty bucket
    with DaskCluster.start(workers=2) as cluster:   # `dask scheduler` + `dask worker` processes
        cluster.address                   # "tcp://127.0.0.1:PORT"
        cluster.kill_worker(0)            # SIGKILL one worker (its nanny too)

Each server gets a free port, is waited for until it answers, and is stopped (its whole process
group) when the block ends, also when a test fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0  # seconds; a busy 2-core machine needs a few


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_process(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start a server in its own process group (so that stopping it stops what it started),
    its output in `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL what is left after 10 s."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()


def wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}:\n{log.read_text()[-2000:]}"
            )
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not answer in {START_TIMEOUT:.0f} s")


@dataclass
class S3Server:
    """moto's S3-compatible server (`moto_server`, from moto[server])."""

    process: subprocess.Popen
    port: int
    log: Path

    @classmethod
    @contextmanager
    def start(cls, folder: Path, checking_credentials: bool = False) -> Iterator[S3Server]:
        """`checking_credentials`: refuse every request whose access key moto's IAM does not
        know (none: so every request), as AWS refuses wrong credentials."""
        port = free_port()
        log = folder / "moto.log"
        command = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
        env = os.environ | {"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if checking_credentials else None
        process = start_process(command, log, env)
        try:
            wait_for_port(port, process, log)
            yield cls(process, port, log)
        finally:
            stop_process(process)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables botocore (and so s3fs) reads: any S3-compatible store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def new_bucket(self) -> str:
        """A fresh, empty bucket's name."""
        import boto3

        name = f"test-{uuid.uuid4().hex[:12]}"
        client = boto3.client("s3", endpoint_url=self.endpoint, **_credentials(self.env))
        client.create_bucket(Bucket=name)
        return name


def _credentials(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


@dataclass
class DaskCluster:
    """A Dask scheduler and `workers` single-threaded worker processes (the `dask` CLI)."""

    scheduler: subprocess.Popen
    port: int
    folder: Path
    env: dict[str, str] | None
    workers: list[subprocess.Popen] = field(default_factory=list)

    @classmethod
    @contextmanager
    def start(
        cls, folder: Path, workers: int = 2, env: dict[str, str] | None = None
    ) -> Iterator[DaskCluster]:
        """Start the scheduler and `workers` workers (in `env`: e.g. an S3 server's variables,
        so the workers reach object storage themselves); wait until all are connected."""
        port = free_port()
        log = folder / "dask-scheduler.log"
        command = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
        scheduler = start_process([*command, "--no-dashboard"], log, env)
        cluster = cls(scheduler, port, folder, env)
        try:
            wait_for_port(port, scheduler, log)
            for _ in range(workers):
                cluster.add_worker()
            cluster.wait_for_workers(workers)
            yield cluster
        finally:
            for worker in cluster.workers:
                stop_process(worker)
            stop_process(scheduler)

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def add_worker(self) -> subprocess.Popen:
        number = len(self.workers)
        log = self.folder / f"dask-worker-{number}.log"
        command = [str(BIN / "dask"), "worker", self.address, "--nthreads", "1"]
        command += ["--name", f"worker-{number}", "--no-dashboard", "--host", "127.0.0.1"]
        worker = start_process(command, log, self.env)
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, count: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=START_TIMEOUT) as client:
            client.wait_for_workers(count, timeout=START_TIMEOUT)

    def kill_worker(self, index: int) -> None:
        """SIGKILL a worker process and the processes it started (a nanny's worker)."""
        os.killpg(self.workers[index].pid, signal.SIGKILL)
        self.workers[index].wait()
