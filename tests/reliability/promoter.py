"""A promoting process for the kill tests (tests/reliability/test_governance.py):

    python -m tests.reliability.promoter REGISTRY COUNT VERSION...

promotes production to each VERSION in turn, COUNT times in all, with
flows.registry.promotion.promote (the code `digitflow models promote` runs), printing each history
entry's number the moment it is recorded. A tight loop, so that a SIGKILL at a random moment
lands anywhere in a promotion: verifying the version, reading the history, creating the entry,
writing the head.
"""

from __future__ import annotations

import sys

from flows.registry.promotion import promote


def main(registry: str, count: str, *versions: str) -> None:
    for index in range(int(count)):
        entry = promote(registry, versions[index % len(versions)], reason=f"loop {index}")
        print(entry["seq"], flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
