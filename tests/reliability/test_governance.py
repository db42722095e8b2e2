"""Registry governance through the real CLI on real trained versions: a worse challenger is
published but not promoted, promote / rollback / history / compare, 20 promotions racing in
separate processes, damaged histories and aliases refused in one line, and promotions SIGKILLed
at random moments.

The champion is the reliability suite's `reference` run (8 epochs, v1, production since its own
run promoted it); the challenger is the same recipe with 1 epoch, trained once for the module.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from flows.registry.aliases import HEAD_FILE, HISTORY_DIR, read_history
from flows.registry.versions import load_published
from tests.reliability.processes import (
    DIGITFLOW,
    assert_one_line_error,
    cli_env,
    digitflow,
    digitflow_all,
    kill,
    python_module,
    start,
    wait_until,
)

KILLS = 6
CONCURRENT = 20


def history(registry: Path, env: dict[str, str], *options: str) -> list[dict[str, Any]]:
    """`digitflow models history --json` (which verifies the chain first)."""
    done = digitflow("models", "history", "--registry", str(registry), "--json", *options, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def shown(registry: Path, name: str, env: dict[str, str]) -> str:
    """The version `digitflow models show NAME` verifies and shows."""
    done = digitflow("models", "show", name, "--registry", str(registry), "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["version"]


@pytest.fixture(scope="module")
def challenged(
    reference: dict[str, Any],
    quick_training: list[str],
    prefect_api: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """A copy of the reference registry (v1, production), plus v2: the same recipe trained for
    1 epoch instead of 8, through `digitflow train --json` with the default --promote."""
    root = tmp_path_factory.mktemp("challenged")
    registry = root / "models"
    shutil.copytree(reference["registry"], registry)
    training = list(quick_training)
    training[training.index("--epochs") + 1] = "1"
    env = cli_env(root / "data", prefect_api)
    done = digitflow(*training, "--registry", str(registry), env=env)
    assert done.returncode == 0, done.stderr
    return {
        "summary": json.loads(done.stdout),
        "registry": registry,
        "env": env,
        "log": done.stderr,
    }


def test_a_clearly_worse_challenger_is_published_but_not_promoted(
    challenged: dict[str, Any],
    reference: dict[str, Any],
    digit_folder: Path,
    tmp_path: Path,
) -> None:
    summary, registry, env = challenged["summary"], challenged["registry"], challenged["env"]
    assert summary["published"] is True and summary["version"] == "v2"
    assert summary["promoted"] is False and summary["promote"] == "if-not-worse"
    assert summary["champion"] == "v1"
    assert summary["accuracy_delta"] < 0 and summary["p_value"] < 0.05
    assert summary["test_accuracy"] < reference["test_accuracy"]
    assert "production stays v1 (if-not-worse: significantly worse" in summary["promotion"]
    assert "compare: against production v1:" in challenged["log"]

    # The history shows no move: the reference run's promotion of v1 only.
    moves = history(registry, env)
    assert [(m["alias"], m["from"], m["to"]) for m in moves] == [("production", None, "v1")]
    assert moves[0]["by"] == f"flow-run:{reference['flow_run_id']}"
    assert shown(registry, "production", env) == "v1" and shown(registry, "latest", env) == "v2"

    # The version records the comparison: metrics.json and the model card.
    challenger = load_published(f"{registry}@v2")
    record = challenger.metrics["champion_challenger"]
    assert (record["champion"], record["promote"]) == ("v1", False)
    assert record["comparison"]["p_value"] == summary["p_value"]
    assert "## Champion and challenger" in (registry / "v2" / "README.md").read_text()

    # predict keeps using the champion, and says which alias it was asked for.
    output = tmp_path / "digits.parquet"
    done = digitflow(
        "predict",
        str(digit_folder),
        "--model",
        str(registry),
        "--output",
        str(output),
        "--json",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    predicted = json.loads(done.stdout)
    assert (predicted["model_version"], predicted["model_alias"]) == ("v1", "production")
    rows = pq.read_table(output, columns=["model_version", "model_alias"]).to_pylist()
    assert {(r["model_version"], r["model_alias"]) for r in rows} == {("v1", "production")}

    # compare: the same statistics for the two versions, on the same prepared test set.
    page = tmp_path / "compare.html"
    done = digitflow(
        "models",
        "compare",
        "v1",
        "v2",
        "--registry",
        str(registry),
        "--json",
        "--output",
        str(page),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    compared = json.loads(done.stdout)
    assert compared["p_value"] == summary["p_value"]
    assert compared["accuracy_delta"] == pytest.approx(summary["accuracy_delta"])
    assert compared["examples"] == 500 and "prepared in" in compared["test_set"]
    assert page.read_text().count("data:image/png;base64,") == 2
    assert "Test images exactly one of them got right" in page.read_text()


def test_compare_without_a_test_set_says_where_to_find_one(
    challenged: dict[str, Any], tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "empty-home", None) | {"DIGITFLOW_MNIST_SOURCE": "ylecun/mnist"}
    done = digitflow(
        "models", "compare", "v1", "v2", "--registry", str(challenged["registry"]), env=env
    )
    assert_one_line_error(done, "no MNIST test set to compare on", "--source /path/to/mnist")


@pytest.fixture
def governed(challenged: dict[str, Any], tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the challenged registry (v1 production, v2 latest) and a CLI environment."""
    registry = tmp_path / "models"
    shutil.copytree(challenged["registry"], registry)
    return registry, cli_env(tmp_path / "data", None)


def test_promote_rollback_and_history_through_the_cli(
    governed: tuple[Path, dict[str, str]],
) -> None:
    registry, env = governed
    at = ("--registry", str(registry))
    done = digitflow("models", "promote", "v2", *at, "--reason", "try the small one", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "production: v1 -> v2 (promoted; alias history entry 2)"
    assert shown(registry, "production", env) == "v2"
    done = digitflow("models", "promote", "1", "--alias", "staging", *at, env=env)
    assert done.returncode == 0, done.stderr

    done = digitflow("models", "rollback", *at, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "production: v2 -> v1 (rolled back; alias history entry 4)"
    assert shown(registry, "production", env) == "v1"
    assert_one_line_error(
        digitflow("models", "rollback", *at, env=env),
        "00000004.json: production had no holder before v1; nothing to roll back to",
    )

    moves = history(registry, env, "--alias", "production")
    assert [(m["from"], m["to"], m["action"]) for m in moves] == [
        (None, "v1", "promote"),
        ("v1", "v2", "promote"),
        ("v2", "v1", "rollback"),
    ]
    for move in moves:
        assert {"time", "alias", "from", "to", "reason", "by"} <= move.keys()
    assert moves[1]["reason"] == "try the small one" and moves[1]["by"].startswith("user:")
    assert moves[2]["reason"] == "rolled back from v2"
    assert moves[0]["time"] < moves[1]["time"] < moves[2]["time"]  # oldest first
    assert [m["alias"] for m in history(registry, env)] == [
        "production",
        "production",
        "staging",
        "production",
    ]

    text = digitflow("models", "history", *at, env=env).stdout
    assert "production: v1 -> v2  (promote by user:" in text and "try the small one" in text
    listed = json.loads(digitflow("models", "list", *at, "--json", env=env).stdout)
    assert [row["aliases"] for row in listed] == [["production", "staging"], ["latest"]]
    table = digitflow("models", "list", *at, env=env).stdout.splitlines()
    assert table[1].split()[-2:] == ["production,", "staging"] and table[2].endswith("latest")


def test_twenty_concurrent_promotes_leave_twenty_verifiable_entries(
    governed: tuple[Path, dict[str, str]],
) -> None:
    registry, env = governed
    before = len(history(registry, env))
    processes = [
        start(
            [
                *DIGITFLOW,
                *("models", "promote", f"v{1 + index % 2}", "--registry", str(registry)),
                *("--reason", f"process {index}"),
            ],
            env,
        )
        for index in range(CONCURRENT)
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    moves = history(registry, env)[before:]  # verified: the chain, the numbering, the head
    assert sorted(m["reason"] for m in moves) == sorted(f"process {i}" for i in range(CONCURRENT))
    previous = history(registry, env)[before - 1]
    for move in moves:
        assert move["from"] == previous["to"]  # each process saw the move before its own
        previous = move
    assert shown(registry, "production", env) == moves[-1]["to"]
    head = json.loads((registry / HEAD_FILE).read_text())
    assert head["entry"] == before + CONCURRENT and head["aliases"]["production"] == moves[-1]["to"]


def _edit_an_entry(registry: Path) -> str:
    path = registry / HISTORY_DIR / "00000002.json"
    path.write_text(path.read_text().replace("try", "TRY"))
    return f"{path}: does not match the checksum"


def _truncate_the_history(registry: Path) -> str:
    (registry / HISTORY_DIR / "00000002.json").unlink()
    return f"{registry / HEAD_FILE}: names history entry 2, but the history"


def _reorder_the_history(registry: Path) -> str:
    first, second = (registry / HISTORY_DIR / f"0000000{n}.json" for n in (1, 2))
    data = first.read_bytes()
    first.write_bytes(second.read_bytes())
    second.write_bytes(data)
    return f"{first}: holds entry 2 where entry 1 belongs"


def _edit_the_head(registry: Path) -> str:
    head = json.loads((registry / HEAD_FILE).read_text())
    head["aliases"]["production"] = "v1"
    (registry / HEAD_FILE).write_text(json.dumps(head))
    return f"{registry / HEAD_FILE}: its aliases do not match history entry 2"


def _delete_the_version(registry: Path) -> str:
    for path in (registry / "v2").rglob("*"):
        path.chmod(0o644)
    shutil.rmtree(registry / "v2")
    return f"{registry / HISTORY_DIR / '00000002.json'}: production names v2, which is not a"


def _tamper_the_version(registry: Path) -> str:
    weights = registry / "v2" / "model.safetensors"
    weights.chmod(0o644)
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    return f"{weights}: checksum mismatch"


DAMAGE = {
    "an entry edited": _edit_an_entry,
    "the history truncated": _truncate_the_history,
    "the history reordered": _reorder_the_history,
    "the head edited": _edit_the_head,
    "production names a missing version": _delete_the_version,
    "production names a tampered version": _tamper_the_version,
}


def test_damaged_histories_and_aliases_are_refused_in_one_line(
    governed: tuple[Path, dict[str, str]],
    digit_folder: Path,
    prefect_api: str,
    tmp_path: Path,
) -> None:
    registry, env = governed
    at = ("--registry", str(registry))
    done = digitflow("models", "promote", "v2", *at, "--reason", "try", env=env)
    assert done.returncode == 0, done.stderr
    commands: list[list[str]] = []
    expected: list[str] = []
    for name, damage in DAMAGE.items():
        copy = tmp_path / name.replace(" ", "-") / "models"
        shutil.copytree(registry, copy)
        fragment = damage(copy)
        uses = [["models", "show", "production"]]
        if "version" not in name:  # the history itself: no reader or writer builds on it
            uses += [["models", "history"], ["models", "list"], ["models", "promote", "v1"]]
        commands += [[*use, "--registry", str(copy)] for use in uses]
        expected += [fragment] * len(uses)
    envs = [env] * len(commands)
    # predict by default uses production: it refuses too, before scoring anything.
    damaged = tmp_path / "an-entry-edited" / "models"
    output = tmp_path / "out" / "digits.parquet"
    commands.append(
        ["predict", str(digit_folder), "--model", str(damaged), "--output", str(output)]
    )
    envs.append(cli_env(tmp_path / "data", prefect_api))
    expected.append(f"{damaged / HISTORY_DIR / '00000002.json'}: does not match the checksum")

    for fragment, result in zip(expected, digitflow_all(commands, envs), strict=True):
        assert_one_line_error(result, fragment)
    assert not output.exists() and not output.with_name(output.name + ".parts").exists()


def test_promotions_killed_at_random_moments_leave_alias_and_history_consistent(
    governed: tuple[Path, dict[str, str]], fault_rng: np.random.Generator
) -> None:
    """A process promoting in a tight loop is SIGKILLed at random moments: after each kill the
    history verifies, production is the last entry's version, the head lags by at most that
    entry, and the next promotion builds on it."""
    registry, env = governed
    lagging = 0
    for trial in range(KILLS):
        entries = len(read_history(str(registry)).entries)
        process = start(
            python_module("tests.reliability.promoter", str(registry), "100000", "v1", "v2"), None
        )
        wait_until(
            lambda e=entries: len(read_history(str(registry)).entries) > e,
            process,
            "a first promotion",
        )
        time.sleep(fault_rng.uniform(0, 0.5))
        kill(process)
        moves = read_history(str(registry))  # verified, or HistoryError
        last = moves.entries[-1]
        assert last["alias"] == "production"
        assert load_published(str(registry)).version == last["to"]
        head = json.loads((registry / HEAD_FILE).read_text())["entry"]
        assert head in (len(moves.entries), len(moves.entries) - 1), (trial, head)
        lagging += head < len(moves.entries)
    print(f"\nkilled {KILLS} promoters; {lagging} left the head one entry behind")
    after = history(registry, env)  # the real CLI verifies the same
    done = digitflow("models", "promote", "v1", "--registry", str(registry), env=env)
    assert done.returncode == 0, done.stderr
    assert f"entry {len(after) + 1})" in done.stdout
    assert json.loads((registry / HEAD_FILE).read_text())["entry"] == len(after) + 1
