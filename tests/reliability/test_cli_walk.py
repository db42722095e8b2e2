"""Every command and subcommand of `digitflow`, given nonsense options and paths, answers with a
usage error or a one-line reason: never a traceback, never a hang.

The walk itself (tests/reliability/cli_walk.py) introspects the click group, so a command added
later is walked too; each case runs in its own process.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from flows.cli.main import main
from tests.reliability.cli_walk import leaves
from tests.reliability.processes import REPO, TIMEOUT, cli_env, python_module


def verdict(result: dict) -> str | None:
    """None if the case was answered well, else what went wrong."""
    stderr = [line for line in result["stderr"].splitlines() if line.strip()]
    stdout = [line for line in result["stdout"].splitlines() if line.strip()]
    if result["hung"]:
        return "hung"
    if "Traceback" in result["stdout"] + result["stderr"]:
        return "traceback"
    if result["code"] == 0:  # accepted: then it may only say, in one line, why nothing was done
        return None if not stderr and len(stdout) <= 1 else "exit 0 with output"
    if len(stderr) != 1 or not stderr[0].startswith("digitflow: error: "):
        return f"exit {result['code']} without a one-line error"
    return None


def test_every_command_answers_nonsense_in_one_line(
    digit_folder: Path, prefect_api: str, tmp_path: Path
) -> None:
    results_file = tmp_path / "results.json"
    env = cli_env(tmp_path / "data", prefect_api, DIGITFLOW_MNIST_SOURCE=str(tmp_path / "none"))
    command = python_module("tests.reliability.cli_walk", str(tmp_path), str(digit_folder))
    walk = subprocess.run(
        [*command, str(results_file)], env=env, cwd=REPO, capture_output=True, timeout=TIMEOUT
    )
    assert walk.returncode == 0, walk.stderr.decode()
    results = json.loads(results_file.read_text())

    bad = [
        f"{why}: digitflow {' '.join(r['argv'])}\n{r['stdout']}{r['stderr']}"
        for r in results
        if (why := verdict(r))
    ]
    assert bad == [], "\n\n".join(bad)
    walked = {" ".join(r["argv"][:2]) for r in results}
    for path, _ in leaves(main, []):
        assert any(w.startswith(" ".join(path)) for w in walked), path
    slowest = sorted(results, key=lambda r: -r["seconds"])[:3]
    print(f"\ncli walk: {len(results)} cases answered in one line; slowest:")
    print("\n".join(f"  {r['seconds']:5.1f} s  digitflow {' '.join(r['argv'])}" for r in slowest))


def test_the_verdict_catches_what_it_must() -> None:
    answer = {"hung": False, "code": 1, "stdout": "", "stderr": "digitflow: error: no such x\n"}
    assert verdict(answer) is None
    assert verdict(answer | {"code": 0, "stderr": "", "stdout": "nothing to do\n"}) is None
    assert verdict(answer | {"hung": True}) == "hung"
    assert verdict(answer | {"stderr": "Traceback (most recent call last):\n"}) == "traceback"
    assert verdict(answer | {"stderr": "digitflow: error: x\nWARNING | more\n"}) is not None
    assert verdict(answer | {"stderr": "Usage: digitflow [OPTIONS]\n"}) is not None
    assert verdict(answer | {"code": 0, "stderr": "a warning\n"}) is not None
