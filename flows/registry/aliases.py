"""Named aliases of a registry's versions (`production`, or any name), and the append-only,
checksum-chained history of every move.

    REGISTRY/
      latest            the newest published version: moved by publishing (versions.py), not here
      aliases.json      the head: each alias's holder as of history entry N, and N's sha256
      history/
        00000001.json   one move per file: seq, time, alias, from, to, action, reason, by, and
        00000002.json   `previous`, the sha256 of the entry before it (the checksum chain)

    history = read_history("data/models")        # verified, or HistoryError naming the file
    history.holder("production")                  # "v3"; None before a first promotion
    history.rollback_target("production")         # the holder before the current one
    entry = move_alias("data/models", "production", "v4", "promote", "why", cli_actor())

The history is the truth and aliases.json its head. A move creates the next entry exclusively
(store.create_exclusively: a hard link on a local disk, a conditional PUT on S3), so of two
writers racing for entry N exactly one gets it; the other reads again and takes N+1. The chain
never forks, and each entry's `from` is the holder its writer saw. Then the head is rewritten.
A writer killed between the two leaves the head one entry behind, which readers accept: the
entry is the move, and the next move brings the head up to date. On a local disk the registry
lock (flock) also serialises writers, so there the head lags only after such a kill.

Readers verify all of it: entries numbered 1..N without gaps, each valid JSON whose `seq` is its
number and whose `previous` is the sha256 of the entry before (an edit, a deletion or a
reordering breaks the chain), each `from` the holder the entries before it give; and the head:
it may lag, but never name an entry past the end (the history was truncated), and its checksum
and aliases must match that entry's. Checksums are not signatures: someone who rewrites the
whole chain consistently is not caught.

Rollback goes back through an alias's holders like an undo stack: a promotion pushes its version
(unless it holds already), a rollback pops one and records a move to the holder below.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec

from flows.registry.provenance import utc_now
from flows.registry.store import (
    RegistryError,
    create_exclusively,
    display,
    is_local,
    open_location,
    registry_lock,
    write_whole,
)

LATEST = "latest"  # moved by publishing, never by a promotion
PRODUCTION = "production"  # what predict, report and the scheduler's inbox use by default
HEAD_FILE = "aliases.json"
HISTORY_DIR = "history"
HEAD_FORMAT = "digitflow-aliases/1"
ACTIONS = ("promote", "rollback")
ALIAS_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
VERSION_NAME = re.compile(r"^v([1-9][0-9]*)$")  # a published version's name: v1, v2, ...
VERSION_LIKE = re.compile(r"^v[0-9]+$")  # v0 and v007 are no versions, and no alias names either
ENTRY_NAME = re.compile(r"^([0-9]{8})\.json$")
ENTRY_FIELDS = {
    "seq": int,
    "time": str,
    "alias": str,
    "from": (str, type(None)),
    "to": str,
    "action": str,
    "reason": str,
    "by": str,
    "previous": (str, type(None)),
}
# Writers racing for the next entry retry; only a filesystem that refuses every exclusive
# create (or a history growing faster than it can be read) gets near this.
MAX_ATTEMPTS = 1000


class HistoryError(RegistryError):
    """The alias history, or its head, is not what was written: edited, truncated, reordered."""


class AliasMoved(RegistryError):
    """The alias no longer holds what the caller based its move on (someone moved it first)."""


def check_alias_name(name: str) -> str:
    """`name` if it can name an alias: lower-case letters, digits, '-' and '_', starting with a
    letter; not `latest` (publishing moves it) and not a version name (v3)."""
    if name == LATEST:
        raise RegistryError(f"{LATEST!r} is moved by publishing, not by promotion; name another")
    if not ALIAS_NAME.match(name) or VERSION_LIKE.match(name):
        raise RegistryError(
            f"{name!r} cannot name an alias (lower-case letters, digits, '-' and '_', starting "
            "with a letter, and not a version name like v3)"
        )
    return name


def cli_actor() -> str:
    """Who moves an alias from the command line: the OS user and the machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        user = f"uid {os.getuid()}"
    return f"user:{user}@{socket.gethostname()}"


def flow_actor(flow_run_id: str) -> str:
    """Who moves an alias from a flow: its Prefect flow run."""
    return f"flow-run:{flow_run_id}"


def encode(entry: dict[str, Any]) -> bytes:
    """An entry's bytes as stored (their sha256 is what the next entry's `previous` names)."""
    return (json.dumps(entry, indent=2) + "\n").encode()


@dataclass
class History:
    """The verified history of a registry's aliases (oldest first)."""

    folder: str  # the history folder, as shown to people
    entries: list[dict[str, Any]] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)  # sha256 of each entry file
    stacks: dict[str, list[str]] = field(default_factory=dict)  # holders, oldest first
    setters: dict[str, int] = field(default_factory=dict)  # alias -> seq of its last move

    def entry_file(self, seq: int) -> str:
        return f"{self.folder}/{seq:08d}.json"

    def holder(self, alias: str) -> str | None:
        """The version `alias` names now, or None if it was never set."""
        stack = self.stacks.get(alias)
        return stack[-1] if stack else None

    def holders(self) -> dict[str, str]:
        return {alias: stack[-1] for alias, stack in sorted(self.stacks.items()) if stack}

    def rollback_target(self, alias: str) -> str | None:
        """The holder before the current one (None: nothing to go back to)."""
        stack = self.stacks.get(alias, [])
        return stack[-2] if len(stack) >= 2 else None

    def set_by(self, alias: str) -> str:
        """The file of the entry that gave `alias` its current holder."""
        return self.entry_file(self.setters[alias])

    def append(self, entry: dict[str, Any], data: bytes, shown: str) -> None:
        """Check that `entry` follows the history (its number, checksum link and `from`), then
        apply it; HistoryError naming `shown` (its file) otherwise."""
        seq = len(self.entries) + 1
        problem = _shape_problem(entry)
        if problem:
            raise HistoryError(f"{shown}: {problem}; the alias history was edited")
        previous = self.digests[-1] if self.digests else None
        if entry["seq"] != seq:
            raise HistoryError(
                f"{shown}: holds entry {entry['seq']} where entry {seq} belongs; the alias "
                "history was reordered or edited"
            )
        if entry["previous"] != previous:
            raise HistoryError(
                f"{shown}: the checksum chain breaks here (it does not name the sha256 of entry "
                f"{seq - 1}); the alias history was edited, reordered or truncated"
            )
        alias, stack = entry["alias"], self.stacks.setdefault(entry["alias"], [])
        if entry["from"] != (stack[-1] if stack else None):
            raise HistoryError(
                f"{shown}: says {alias} moved from {entry['from']}, but the entries before it "
                f"leave it at {stack[-1] if stack else 'nothing'}; the alias history was edited"
            )
        if entry["action"] == "rollback":
            if len(stack) < 2 or stack[-2] != entry["to"]:
                raise HistoryError(
                    f"{shown}: a rollback of {alias} to {entry['to']}, which is not the holder "
                    "before; the alias history was edited"
                )
            stack.pop()
        elif not stack or stack[-1] != entry["to"]:
            stack.append(entry["to"])
        self.entries.append(entry)
        self.digests.append(hashlib.sha256(data).hexdigest())
        self.setters[alias] = seq


def _shape_problem(entry: Any) -> str | None:
    """What is wrong with the fields of an entry, or None."""
    if not isinstance(entry, dict) or set(entry) != set(ENTRY_FIELDS):
        return "not a history entry (wrong fields)"
    for name, kind in ENTRY_FIELDS.items():
        if not isinstance(entry[name], kind) or isinstance(entry[name], bool):
            return f"field {name!r} has the wrong type"
    if entry["action"] not in ACTIONS or not VERSION_NAME.match(entry["to"]):
        return "not a history entry (unknown action or version)"
    if not ALIAS_NAME.match(entry["alias"]) or entry["alias"] == LATEST:
        return f"not a history entry (alias {entry['alias']!r})"
    return None


def _paths(fs: fsspec.AbstractFileSystem, root: str) -> tuple[str, str]:
    return f"{root}/{HISTORY_DIR}", f"{root}/{HEAD_FILE}"


def read_history(registry: str) -> History:
    """The registry's alias history, verified (an empty History when it has none)."""
    fs, root = open_location(registry)
    return _read(fs, root)


def _read(fs: fsspec.AbstractFileSystem, root: str) -> History:
    folder, head_path = _paths(fs, root)
    history = History(display(fs, folder))
    head = _read_head(fs, head_path)
    fs.invalidate_cache(folder)  # s3fs caches listings: a writer that lost a race must see why
    try:
        listed = fs.ls(folder, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        listed = []
    # Other names (a killed writer's temporary file, say) are not entries.
    numbered = {
        int(match.group(1)): path for path in listed if (match := ENTRY_NAME.match(Path(path).name))
    }
    for seq in range(1, len(numbered) + 1):
        if seq not in numbered:
            raise HistoryError(
                f"{history.entry_file(seq)}: missing, but the alias history goes on to entry "
                f"{max(numbered)}; it was truncated or edited"
            )
    paths = [numbered[seq] for seq in range(1, len(numbered) + 1)]
    contents = fs.cat(paths) if paths else {}
    holders_at_head: dict[str, str] = {}
    for seq, path in enumerate(paths, start=1):
        shown = history.entry_file(seq)
        data = contents[path]
        try:
            entry = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise HistoryError(
                f"{shown}: not valid JSON; the alias history was edited or truncated"
            ) from None
        history.append(entry, data, shown)
        if head is not None and seq == head["entry"]:
            holders_at_head = history.holders()
    if head is not None:
        _check_head(head, display(fs, head_path), history, holders_at_head)
    return history


def _read_head(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any] | None:
    """aliases.json, shape-checked; None when no move has written it yet."""
    shown = display(fs, path)
    try:
        head = json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        raise HistoryError(f"{shown}: not valid JSON; it was edited or truncated") from None
    except IsADirectoryError:
        raise HistoryError(f"{shown}: is a folder, not the aliases file") from None
    if not isinstance(head, dict) or not isinstance(head.get("entry"), int):
        raise HistoryError(f"{shown}: not an aliases file (no entry number)")
    return head


def _check_head(
    head: dict[str, Any], shown: str, history: History, holders_at_head: dict[str, str]
) -> None:
    """The head may lag behind the history (a writer killed after its entry), never lead it,
    and must agree with the entry it names."""
    entry = head["entry"]
    if entry > len(history.entries):
        raise HistoryError(
            f"{shown}: names history entry {entry}, but the history in {history.folder} ends "
            f"at entry {len(history.entries)}; it was truncated"
        )
    if entry < 1:
        return
    if head.get("sha256") != history.digests[entry - 1]:
        raise HistoryError(
            f"{history.entry_file(entry)}: does not match the checksum {HEAD_FILE} records for "
            "it; the alias history was edited"
        )
    if head.get("aliases") != holders_at_head:
        raise HistoryError(
            f"{shown}: its aliases do not match history entry {entry}; {HEAD_FILE} was edited"
        )


def _head_document(history: History) -> dict[str, Any]:
    return {
        "format": HEAD_FORMAT,
        "entry": len(history.entries),
        "sha256": history.digests[-1],
        "aliases": history.holders(),
    }


def _write_head(fs: fsspec.AbstractFileSystem, path: str, history: History) -> None:
    """Bring the head up to `history`, unless it already names a later entry (a concurrent
    writer on an object store got there first; on a local disk the lock rules that out)."""
    try:
        current = json.loads(fs.cat_file(path)).get("entry", 0)
    except (FileNotFoundError, ValueError, AttributeError):
        current = 0
    if isinstance(current, int) and current >= len(history.entries):
        return
    write_whole(fs, path, (json.dumps(_head_document(history), indent=2) + "\n").encode())


class _Anything:
    """`expect` for a move that does not care what the alias held before."""


ANYTHING: Any = _Anything()


def move_alias(
    registry: str,
    alias: str,
    to: str,
    action: str,
    reason: str,
    by: str,
    expect: str | None = ANYTHING,
) -> dict[str, Any]:
    """Record that `alias` now names version `to` (which the caller has verified) as the next
    history entry, then update the head; returns the entry. With `expect`, the move happens only
    if the alias still holds that (None: was never set), else AliasMoved."""
    check_alias_name(alias)
    if action not in ACTIONS or not VERSION_NAME.match(to):
        raise ValueError(f"not a move: {action} {alias} to {to}")
    fs, root = open_location(registry)
    folder, head_path = _paths(fs, root)
    with registry_lock(fs, root):
        for _ in range(MAX_ATTEMPTS):
            history = _read(fs, root)
            holder = history.holder(alias)
            if expect is not ANYTHING and holder != expect:
                raise AliasMoved(
                    f"{history.folder}: {alias} moved to {holder or 'nothing'} meanwhile "
                    f"(expected {expect or 'nothing'}); not moved"
                )
            if action == "rollback" and history.rollback_target(alias) != to:
                raise AliasMoved(f"{history.folder}: {alias} cannot roll back to {to} any more")
            entry = {
                "seq": len(history.entries) + 1,
                "time": utc_now("milliseconds"),  # moves can come milliseconds apart
                "alias": alias,
                "from": holder,
                "to": to,
                "action": action,
                "reason": reason,
                "by": by,
                "previous": history.digests[-1] if history.digests else None,
            }
            data = encode(entry)
            shown = history.entry_file(entry["seq"])
            history.append(entry, data, shown)  # the same checks a reader makes
            if not is_local(fs):
                fs.makedirs(folder, exist_ok=True)
            if create_exclusively(fs, f"{folder}/{entry['seq']:08d}.json", data):
                _write_head(fs, head_path, history)
                return entry
    raise RegistryError(
        f"{display(fs, folder)}: could not append a move after {MAX_ATTEMPTS} tries"
    )
