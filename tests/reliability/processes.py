"""Real processes for the reliability suite: the `digitflow` console script and `python -m` entry
points, started, watched and killed (SIGKILL, nothing gentler) the way a crash would.

    done = digitflow("models", "show", "v9", env=cli_env(home, api))
    assert_one_line_error(done, "no published version v9")
    process = start([*DIGITFLOW, "train", ...], env)
    wait_until(lambda: checkpoint_epochs(path) >= 2, process)
    kill(process)                        # SIGKILL to the process itself, not its group
    assert wait_gone(descendants)        # ...and what it started must not outlive it
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from flows.runtime.server import server_problem
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
DIGITFLOW = [str(Path(sys.executable).parent / "digitflow")]
TIMEOUT = 600  # seconds: only a hung process gets near this
GRACE = 30.0  # seconds for the processes a killed command started to notice and exit


def cli_env(home: Path, api_url: str | None, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: its own data directory, the given Prefect API (None: the
    CLI starts its embedded server), no Hub access."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"DIGITFLOW_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env | extra


def digitflow(
    *args: str,
    env: dict[str, str],
    cwd: Path = REPO,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess:
    """Run the console script to the end (`preexec_fn`: run in the child before it starts, to
    set a resource limit, say)."""
    return subprocess.run(
        [*DIGITFLOW, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=preexec_fn,
    )


def digitflow_all(
    commands: Sequence[Sequence[str]],
    env: dict[str, str] | Sequence[dict[str, str]],
    at_once: int = 4,
) -> list[subprocess.CompletedProcess]:
    """Run independent console-script commands, `at_once` at a time (their waits overlap), in
    one environment or one each."""
    envs = [env] * len(commands) if isinstance(env, dict) else list(env)
    running: list[tuple[Sequence[str], subprocess.Popen]] = []
    results = []

    def finish_oldest() -> None:
        args, process = running.pop(0)
        out, err = process.communicate(timeout=TIMEOUT)
        results.append(subprocess.CompletedProcess(args, process.returncode, out, err))

    for args, args_env in zip(commands, envs, strict=True):
        if len(running) == at_once:
            finish_oldest()
        running.append((args, start([*DIGITFLOW, *args], args_env)))
    while running:
        finish_oldest()
    return results


def start(
    command: Sequence[str],
    env: dict[str, str] | None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen:
    """Start a process (stdout and stderr captured as text; env None: this one's)."""
    return subprocess.Popen(
        list(command),
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec_fn,
    )


@dataclass
class PrefectServer:
    """A real `prefect server start` of its own, for a test that kills it (`kill_group`)."""

    process: subprocess.Popen
    url: str  # its API
    home: Path  # its PREFECT_HOME: SQLite database, server.log

    def wait_until_ready(self, limit: float = 180) -> None:
        """Until its API answers (a busy 2-core machine has needed more than 60 s)."""
        deadline = time.monotonic() + limit
        while server_problem(self.url) is not None:
            assert self.process.poll() is None, (self.home / "server.log").read_text()
            assert time.monotonic() < deadline, f"the Prefect server did not start in {limit} s"
            time.sleep(0.5)


@contextmanager
def prefect_server(home: Path) -> Iterator[PrefectServer]:
    """Start one (SQLite in `home`, a free 127.0.0.1 port, its own process group) without
    waiting for it; whatever is left of it at the end is SIGKILLed."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    # No UI and no background services (scheduler, event persister...): the API itself is what
    # a CLI talks to, and it starts 5 s sooner without them.
    command = [str(Path(sys.executable).parent / "prefect"), "server", "start", "--no-ui"]
    command += ["--no-services", "--host", "127.0.0.1", "--port", str(port)]
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "server.log", "w") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield PrefectServer(process, f"http://127.0.0.1:{port}/api", home)
    finally:
        kill_group(process)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a process started in its own session, and everything in its group."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def python_module(module: str, *args: str) -> list[str]:
    """The command line of `python -m module args` (run from the repository root)."""
    return [sys.executable, "-m", module, *args]


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """A user-facing failure: non-zero exit, no traceback, exactly one line on stderr, in the
    CLI's "digitflow: error: ..." form, containing every fragment. Returns that line."""
    shown = f"{result.args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert result.returncode != 0, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("digitflow: error: "), shown
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in the error line\n{shown}"
    return lines[0]


STAGES = ("download", "prepare", "train", "evaluate", "compare", "publish")


def assert_error_after_stages(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """`digitflow train` failing part-way: the stage lines of the stages that finished, then the
    one-line error, as assert_one_line_error checks it (nothing else on stderr)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    shown = f"{result.args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert all(line.startswith(tuple(f"{s}: " for s in STAGES)) for line in lines[:-1]), shown
    last = subprocess.CompletedProcess(result.args, result.returncode, result.stdout, lines[-1])
    return assert_one_line_error(last, *fragments)


def wait_until(
    condition: Callable[[], bool], process: subprocess.Popen, what: str, limit: float = 300
) -> None:
    """Poll `condition` every 10 ms while `process` runs; fail if it exits or `limit` passes."""
    deadline = time.monotonic() + limit
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"exited {process.returncode} before {what}\n{out}\n{err}")
        if time.monotonic() > deadline:
            kill(process)
            raise AssertionError(f"no {what} within {limit:.0f} s")
        time.sleep(0.01)


def kill(process: subprocess.Popen) -> tuple[str, str]:
    """SIGKILL the process itself (not its group, as the kernel's OOM killer would) and reap it;
    returns what it wrote to stdout and stderr until then.

    Fails if its output stays open: a process it started outlives it, holding the pipes (that
    process is killed here, so a failing test leaves nothing behind)."""
    children = descendants(process.pid)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    try:
        return process.communicate(timeout=GRACE)
    except subprocess.TimeoutExpired:
        left = still_running(children, grace=0)
        process.communicate()
        raise AssertionError(f"killed, but these processes it started live on: {left}") from None


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, their children...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, pending = set(), [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.add(child)
            pending.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "(gone)"


def still_running(pids: set[int], grace: float = GRACE) -> dict[int, str]:
    """The processes of `pids` still alive after up to `grace` seconds, with their command lines
    (SIGKILLed here so that a failing test leaves nothing behind)."""
    deadline = time.monotonic() + grace
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {pid: command_line(pid) for pid in pids if alive(pid)}
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left
