"""Training killed with SIGKILL at random epochs, then rerun: it resumes from the last checkpoint
and publishes exactly the weights of an uninterrupted run with the same seed.

The real `digitflow train`, in its own process, on the 2,000/500-row subset: it is killed right
after the checkpoint of a randomly drawn epoch appears, rerun and killed again at a later random
epoch, then rerun to the end. Its model.safetensors must have the same sha256 as the reference
run's (tests/reliability/conftest.py), which was never interrupted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from flows.registry.versions import list_versions
from netcore.io import sha256_file
from tests.reliability.conftest import EPOCHS
from tests.reliability.on_disk import checkpoint_epochs
from tests.reliability.processes import DIGITFLOW, cli_env, digitflow, kill, start, wait_until


def test_killed_twice_at_random_epochs_then_resumed_to_the_same_weights(
    reference: dict[str, Any],
    quick_training: list[str],
    prefect_api: str,
    fault_rng: np.random.Generator,
    tmp_path: Path,
) -> None:
    home = tmp_path / "data"
    env = cli_env(home, prefect_api)
    targets = sorted(fault_rng.choice(np.arange(1, EPOCHS - 1), size=2, replace=False))
    killed_at = [0]
    for target in targets:
        process = start([*DIGITFLOW, *quick_training], env)
        goal = max(int(target), killed_at[-1] + 1)  # a later epoch than the last kill
        wait_until(
            lambda g=goal: checkpoint_epochs(home) >= g, process, f"epoch {goal}'s checkpoint"
        )
        kill(process)
        killed_at.append(checkpoint_epochs(home))
        assert killed_at[-1] < EPOCHS, "the kill came after training ended"
        assert list_versions(str(home / "models")) == []  # nothing published, nothing partial

    done = digitflow(*quick_training, env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["resumed_from_epoch"] == killed_at[-1], (killed_at, summary)
    assert summary["epochs"] == EPOCHS and summary["version"] == "v1"
    resumed, uninterrupted = Path(summary["artifact"]), Path(reference["artifact"])
    for name in ("model.safetensors", "config.json"):
        assert sha256_file(resumed / name) == sha256_file(uninterrupted / name), name
    assert summary["test_accuracy"] == reference["test_accuracy"]
