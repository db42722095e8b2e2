"""flows/runtime/server.py's embedded server, a real one: stop() does not wait for it to exit,
yet the process is gone and reaped soon after (no zombie while the command lives on), and the
automations services that it leaves off do not keep it from serving."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from flows.runtime.embedded_server import launch
from flows.runtime.server import EmbeddedServer


def test_a_stopped_server_exits_and_is_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    server = EmbeddedServer(*launch())
    try:
        server.wait_until_ready()
    finally:
        server.stop()
    pid = server.process.pid
    deadline = time.monotonic() + 30
    # Only the reaper thread calls wait(): returncode is set once the process is reaped.
    while server.process.returncode is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.process.returncode is not None, "the stopped server was not reaped"
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # no child of that id left: not a zombie
