"""A publishing process for the fault tests (tests/reliability/test_publish_faults.py):

    python -m tests.reliability.publisher REGISTRY PAYLOAD TAG COUNT [GO]

publishes the folder PAYLOAD COUNT times into REGISTRY with flows.registry.publish (the code the
training flow's publish stage calls), printing each version the moment it is committed. Each
version's README.md names TAG, so a test can tell which process made it. With GO, it first waits
for that file to exist: a common start line for concurrent publishers.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from flows.registry.versions import publish


def main(registry: str, payload: str, tag: str, count: str, go: str | None = None) -> None:
    while go and not Path(go).exists():
        time.sleep(0.002)
    for _ in range(int(count)):
        version, _ = publish(
            registry, Path(payload), lambda v: {"README.md": f"{v} by {tag}\n"}, {"by": tag}
        )
        print(version, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
