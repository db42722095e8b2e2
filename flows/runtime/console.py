"""What a flow tells the person at the terminal, apart from Prefect's logs.

The CLI turns it on (`enable()`); flows run elsewhere (tests, `digitflow serve`) stay silent and
only log. Lines go to stderr, so `--json` output on stdout stays one clean JSON object. The
progress bar is drawn only when both stdout and stderr are terminals.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import click

_state = {"enabled": False}


class Progress(Protocol):
    def update(self, n_steps: int) -> None: ...


class _NoBar:
    def update(self, n_steps: int) -> None:
        pass


def enable(on: bool = True) -> None:
    _state["enabled"] = on


def say(message: str) -> None:
    if _state["enabled"]:
        click.echo(message, err=True)


@contextmanager
def progress(length: int, label: str) -> Iterator[Progress]:
    """A click progress bar of `length` steps on a terminal; elsewhere, nothing."""
    if not (_state["enabled"] and sys.stdout.isatty() and sys.stderr.isatty()):
        yield _NoBar()
        return
    with click.progressbar(length=length, label=label, file=sys.stderr, show_eta=True) as bar:
        yield bar


def note(message: str, log: Callable[[str], None]) -> None:
    """A line for a log (`log`: a Prefect run logger's `info`, say) and, under the CLI, the
    terminal."""
    log(message)
    say(message)
