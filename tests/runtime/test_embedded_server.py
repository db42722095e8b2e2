"""flows/runtime/server.py's embedded server, real ones on 127.0.0.1: stop() does not wait for
the server to exit, yet the process is gone and reaped soon after (no zombie while the command
lives on); a database this Prefect migrated before is served without a migration run, and one
that is new again (deleted) is migrated."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import prefect
import pytest

from flows.runtime.embedded_server import SCHEMA_SUFFIX, launch
from flows.runtime.server import EmbeddedServer


def serve_once(home: Path) -> EmbeddedServer:
    """Start a server on `home`, check that its database answers, stop it and wait until the
    reaper thread (the only caller of wait()) has reaped it."""
    server = EmbeddedServer(*launch())
    try:
        server.wait_until_ready()
        request = urllib.request.Request(
            f"{server.api_url}/flows/filter", data=b"{}", method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
    finally:
        server.stop()
    deadline = time.monotonic() + 30
    while server.process.returncode is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return server


def test_a_stopped_server_exits_and_is_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    server = serve_once(tmp_path / "prefect")
    assert server.process.returncode is not None, "the stopped server was not reaped"
    with pytest.raises(ChildProcessError):
        os.waitpid(server.process.pid, os.WNOHANG)  # no child of that id left: not a zombie


def test_a_migrated_database_is_served_without_migrating_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    database = tmp_path / "prefect" / "prefect.db"
    schema = Path(f"{database}{SCHEMA_SUFFIX}")
    serve_once(tmp_path / "prefect")  # a new database: migrated, and its revision remembered
    known = json.loads(schema.read_text())
    assert list(known) == [prefect.__version__]
    serve_once(tmp_path / "prefect")  # the same database: served as it is
    for path in database.parent.glob("prefect.db*"):
        if path != schema:
            path.unlink()  # the database gone, its schema file kept: migrated again
    serve_once(tmp_path / "prefect")
    assert database.is_file()
    assert json.loads(schema.read_text()) == known
