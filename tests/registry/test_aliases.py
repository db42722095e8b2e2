"""Aliases and their history: promote, rollback, the checksum chain and its head, tampering,
and writers racing on a filesystem without locks (memory://, as an object store would be).

Real files and real fsspec filesystems; the command line and real processes are in
tests/reliability/test_governance.py.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

from flows.registry.aliases import (
    HEAD_FILE,
    HISTORY_DIR,
    AliasMoved,
    HistoryError,
    check_alias_name,
    encode,
    read_history,
)
from flows.registry.promotion import decide, promote, rollback
from flows.registry.store import RegistryError
from flows.registry.versions import load_published, publish, version_summaries
from tests.builders import card, make_payload

PROVENANCE = {"test_accuracy": 0.9}


def registry_with(location: str, payload: Path, versions: int) -> str:
    for _ in range(versions):
        publish(location, payload, card, PROVENANCE)
    return location


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    (tmp_path / "payload").mkdir()
    return make_payload(tmp_path / "payload")


@pytest.fixture(params=["local", "memory"])
def registry(request: pytest.FixtureRequest, tmp_path: Path, payload: Path) -> str:
    """A registry holding v1, v2 and v3, on a local disk or in memory://."""
    if request.param == "local":
        return registry_with(str(tmp_path / "models"), payload, 3)
    return registry_with(f"memory://aliases-{uuid.uuid4().hex}/models", payload, 3)


def test_promote_rollback_and_the_history(registry: str) -> None:
    assert read_history(registry).entries == []
    assert load_published(registry).version == "v3"  # production falls back to latest
    assert load_published(registry).alias == "production"

    promote(registry, "v1", reason="first", by="user:test")
    promote(registry, "2", reason="second", by="user:test")
    promote(registry, "latest", alias="staging", by="user:test")
    assert load_published(registry).version == "v2"
    assert load_published(f"{registry}@production").version == "v2"
    assert load_published(f"{registry}@staging").version == "v3"
    assert load_published(f"{registry}@latest").alias == "latest"
    assert load_published(f"{registry}@v1").alias is None

    history = read_history(registry)
    assert [(e["alias"], e["from"], e["to"], e["action"]) for e in history.entries] == [
        ("production", None, "v1", "promote"),
        ("production", "v1", "v2", "promote"),
        ("staging", None, "v3", "promote"),
    ]
    assert history.entries[0]["reason"] == "first" and history.entries[0]["by"] == "user:test"
    assert history.entries[0]["previous"] is None and history.entries[1]["previous"]
    rows = {row["version"]: row["aliases"] for row in version_summaries(registry)}
    assert rows == {"v1": [], "v2": ["production"], "v3": ["latest", "staging"]}

    # Rollback is an undo stack, each step a move of its own; a re-promotion of the holder
    # changes nothing to go back to.
    promote(registry, "v3")
    promote(registry, "v3")
    assert rollback(registry)["to"] == "v2"
    assert rollback(registry)["to"] == "v1"
    with pytest.raises(RegistryError, match="production had no holder before v1"):
        rollback(registry)
    with pytest.raises(RegistryError, match="staging had no holder before v3"):
        rollback(registry, "staging")
    with pytest.raises(RegistryError, match="nightly was never promoted"):
        rollback(registry, "nightly")
    history = read_history(registry)
    assert [e["action"] for e in history.entries][-2:] == ["rollback", "rollback"]
    assert history.holders() == {"production": "v1", "staging": "v3"}
    head = json.loads(
        fsspec.core.url_to_fs(registry)[0].cat_file(f"{_root(registry)}/aliases.json")
    )
    assert head["entry"] == len(history.entries) == 7
    assert head["aliases"] == {"production": "v1", "staging": "v3"}


def _root(registry: str) -> str:
    return fsspec.core.url_to_fs(registry)[1].rstrip("/")


def test_moves_are_checked(registry: str) -> None:
    with pytest.raises(RegistryError, match="no published version v9"):
        promote(registry, "v9")
    for name in ("latest", "v4", "v0", "Prod", "a b"):
        with pytest.raises(RegistryError):
            check_alias_name(name)
    with pytest.raises(RegistryError, match="moved by publishing"):
        promote(registry, "v1", alias="latest")
    promote(registry, "v1")
    with pytest.raises(AliasMoved, match="production moved to v1 meanwhile"):
        promote(registry, "v2", expect=None)
    assert promote(registry, "v2", expect="v1")["from"] == "v1"
    assert read_history(registry).holder("production") == "v2"


def test_the_first_promotion_and_the_rule() -> None:
    assert decide("if-not-worse", None, None, None)[0] is True
    assert decide("if-better", None, None, None)[0] is True
    assert decide("never", None, None, None) == (False, "--promote never")
    assert decide("always", "v1", -0.2, 1e-9) == (True, "--promote always")
    # A clear regression, noise, and a clear improvement.
    assert decide("if-not-worse", "v1", -0.02, 1e-6) == (
        False,
        "if-not-worse: significantly worse (-2.00 pp, p = 1e-06 against v1)",
    )
    assert decide("if-not-worse", "v1", -0.0005, 0.6)[0] is True
    assert decide("if-better", "v1", -0.0005, 0.6)[0] is False
    assert decide("if-better", "v1", 0.0005, 0.6)[0] is False
    assert decide("if-better", "v1", 0.01, 0.001) == (
        True,
        "if-better: significantly better (+1.00 pp, p = 0.001 against v1)",
    )
    assert decide("if-not-worse", "v1", 0.01, 0.001)[0] is True
    with pytest.raises(ValueError, match="unknown promotion policy"):
        decide("sometimes", "v1", 0.0, 1.0)


# ---- tampering --------------------------------------------------------------------------------


def _local_history(tmp_path: Path, payload: Path) -> Path:
    """A local registry v1..v3 with five moves of production and one of staging."""
    registry = registry_with(str(tmp_path / "models"), payload, 3)
    for version in ("v1", "v2", "v3"):
        promote(registry, version, by="user:test")
    promote(registry, "v1", alias="staging", by="user:test")
    rollback(registry, by="user:test")
    promote(registry, "v3", by="user:test")
    return Path(registry)


def _entry(registry: Path, seq: int) -> Path:
    return registry / HISTORY_DIR / f"{seq:08d}.json"


def _rewrite(path: Path, change: Callable[[dict], None]) -> None:
    entry = json.loads(path.read_text())
    change(entry)
    path.write_bytes(encode(entry))


def _edit_reason(registry: Path) -> None:
    _rewrite(_entry(registry, 2), lambda e: e.update(reason="nothing to see"))


def _edit_target_and_rechain(registry: Path) -> None:
    """Entry 6 edited, and entry 6's successor re-chained to it: the `from` check catches it."""
    _rewrite(_entry(registry, 5), lambda e: e.update(to="v1", action="promote"))
    digest = __import__("hashlib").sha256(_entry(registry, 5).read_bytes()).hexdigest()
    _rewrite(_entry(registry, 6), lambda e: e.update(previous=digest))


def _edit_last(registry: Path) -> None:
    _rewrite(_entry(registry, 6), lambda e: e.update(by="someone else"))


def _truncate_tail(registry: Path) -> None:
    _entry(registry, 6).unlink()


def _truncate_file(registry: Path) -> None:
    path = _entry(registry, 3)
    path.write_bytes(path.read_bytes()[:40])


def _delete_middle(registry: Path) -> None:
    _entry(registry, 3).unlink()


def _reorder(registry: Path) -> None:
    second, third = _entry(registry, 2), _entry(registry, 3)
    data = second.read_bytes()
    second.write_bytes(third.read_bytes())
    third.write_bytes(data)


def _edit_head(registry: Path) -> None:
    head = json.loads((registry / HEAD_FILE).read_text())
    head["aliases"]["production"] = "v1"
    (registry / HEAD_FILE).write_text(json.dumps(head))


def _head_not_json(registry: Path) -> None:
    (registry / HEAD_FILE).write_text('{"entry": 6, "sha')


def _history_deleted(registry: Path) -> None:
    for path in (registry / HISTORY_DIR).iterdir():
        path.unlink()


TAMPERING = {
    "an entry edited": (_edit_reason, "00000003.json: the checksum chain breaks here"),
    "an entry edited and re-chained": (
        _edit_target_and_rechain,
        "00000006.json: says production moved from v2",
    ),
    "the last entry edited": (
        _edit_last,
        "00000006.json: does not match the checksum aliases.json",
    ),
    "the last entry deleted": (
        _truncate_tail,
        "aliases.json: names history entry 6, but the history",
    ),
    "an entry cut short": (_truncate_file, "00000003.json: not valid JSON"),
    "an entry deleted": (_delete_middle, "00000003.json: missing, but the alias history goes on"),
    "two entries swapped": (_reorder, "00000002.json: holds entry 3 where entry 2 belongs"),
    "the head edited": (_edit_head, "aliases.json: its aliases do not match history entry 6"),
    "the head cut short": (_head_not_json, "aliases.json: not valid JSON"),
    "the history deleted": (
        _history_deleted,
        "aliases.json: names history entry 6, but the history",
    ),
}


@pytest.mark.parametrize("case", TAMPERING, ids=list(TAMPERING))
def test_a_tampered_history_is_refused_naming_the_file(
    case: str, tmp_path: Path, payload: Path
) -> None:
    registry = _local_history(tmp_path, payload)
    assert read_history(str(registry)).holder("production") == "v3"
    damage, message = TAMPERING[case]
    damage(registry)
    for attempt in (
        lambda: read_history(str(registry)),
        lambda: load_published(str(registry)),  # production: every reader refuses
        lambda: promote(str(registry), "v1"),  # and no writer builds on it
    ):
        with pytest.raises(HistoryError) as error:
            attempt()
        assert message in str(error.value) and "\n" not in str(error.value)
        assert str(registry) in str(error.value)


def test_a_killed_writer_leaves_a_lagging_head_and_a_temporary_file(
    tmp_path: Path, payload: Path
) -> None:
    """What a SIGKILL between the entry and the head leaves (tests/reliability kills for real):
    readers take the entry as the move; the next move brings the head up to date."""
    registry = _local_history(tmp_path, payload)
    head = (registry / HEAD_FILE).read_bytes()
    promote(str(registry), "v2")
    (registry / HEAD_FILE).write_bytes(head)  # the head as it was before that move
    (registry / HISTORY_DIR / ".00000008.json.0123456789ab.tmp").write_text('{"seq": 8')
    assert read_history(str(registry)).holder("production") == "v2"
    assert load_published(str(registry)).version == "v2"
    promote(str(registry), "v1")
    assert json.loads((registry / HEAD_FILE).read_text())["entry"] == 8


def test_an_alias_naming_a_missing_or_tampered_version_is_refused(
    tmp_path: Path, payload: Path
) -> None:
    registry = _local_history(tmp_path, payload)
    (registry / "v3" / "manifest.json").chmod(0o644)
    (registry / "v3" / "manifest.json").unlink()
    with pytest.raises(RegistryError) as error:
        load_published(str(registry))
    assert str(error.value).startswith(f"{registry}/history/00000006.json: production names v3")
    assert "not a published version" in str(error.value)

    staging = registry / "v1" / "model.safetensors"
    staging.chmod(0o644)
    staging.write_bytes(staging.read_bytes()[:-1] + b"\0")
    with pytest.raises(RegistryError, match=f"{staging}: checksum mismatch"):
        load_published(f"{registry}@staging")
    with pytest.raises(RegistryError, match="checksum mismatch"):
        promote(str(registry), "staging")  # a promotion verifies what it names


# ---- writers racing ---------------------------------------------------------------------------


class ObjectStore(MemoryFileSystem):
    """memory://, with each request atomic as on S3: a read returns a snapshot, and a create
    (pipe_file mode="create", If-None-Match on S3) checks and writes in one step. Plain memory://
    cannot be shared by threads: its open files are the stored BytesIO objects themselves ("each
    path should only be active once at any moment"). No lock across requests, as on S3."""

    protocol = "objectstore"
    store: dict = {}  # noqa: RUF012  (fsspec's own layout: a class-level store)
    pseudo_dirs = [""]  # noqa: RUF012
    request = threading.Lock()
    refused = 0  # creates refused because the object existed: writers that lost a race

    def _open(self, path: str, mode: str = "rb", **kwargs):  # type: ignore[override]
        if mode == "rb":
            with self.request:
                return MemoryFile(None, None, self.cat_file(path))
        return super()._open(path, mode, **kwargs)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs) -> None:
        with self.request:
            try:
                super().pipe_file(path, value, mode=mode, **kwargs)
            except FileExistsError:
                ObjectStore.refused += 1
                raise


fsspec.register_implementation("objectstore", ObjectStore, clobber=True)


def test_concurrent_promotions_without_a_lock_chain_every_move(payload: Path) -> None:
    """An object store has no lock: 20 threads promote at once, each move must get an entry of
    its own (exclusive creation decides who gets each number, the losers read again), and the
    alias ends at the last one recorded. Threads switch every microsecond, so that writers do
    lose races; rounds repeat until some did (the store counts its refused creates)."""
    registry = registry_with(f"objectstore://race-{uuid.uuid4().hex}/models", payload, 3)
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        ObjectStore.refused = 0
        for round in range(1, 6):
            _promote_at_once(registry, 20, round)
            if ObjectStore.refused:
                break
    finally:
        sys.setswitchinterval(switching)
    assert ObjectStore.refused >= 1
    history = read_history(registry)
    expected = sorted(f"round {r} thread {i}" for r in range(1, round + 1) for i in range(20))
    assert sorted(e["reason"] for e in history.entries) == expected
    for before, after in zip(history.entries, history.entries[1:], strict=False):
        assert after["from"] == before["to"]  # each saw the move before it
    assert history.holder("production") == history.entries[-1]["to"]
    assert load_published(registry).version == history.entries[-1]["to"]


def _promote_at_once(registry: str, threads: int, round: int) -> None:
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def promoter(index: int) -> None:
        try:
            start.wait()
            reason = f"round {round} thread {index}"
            promote(registry, f"v{index % 3 + 1}", reason=reason, by=f"thread:{index}")
        except BaseException as error:  # reported below
            errors.append(error)

    running = [threading.Thread(target=promoter, args=(i,)) for i in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    assert errors == []
