"""The `digitflow` command line (click). Commands are added by the flows modules."""

from __future__ import annotations

import click


@click.group()
def main() -> None:
    """digitflow: train and serve a from-scratch NumPy digit classifier with Prefect."""
