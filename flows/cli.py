"""The `digitflow` command line (click). Commands are added by the flows modules."""

from __future__ import annotations

import click

from flows.report import report


@click.group()
def main() -> None:
    """digitflow: train and serve a from-scratch NumPy digit classifier with Prefect."""


main.add_command(report)
