"""Markdown tables, for the Prefect artifacts and the model card."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def table(headers: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; cells are written with str()."""
    lines = [_row(headers), "|" + "---|" * len(headers)]
    lines += [_row(row) for row in rows]
    return "\n".join(lines)


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"
