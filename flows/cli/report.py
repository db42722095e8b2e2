"""`digitflow report`: the command line front of flows/report.py.

matplotlib and the image code are imported only when the command runs, so that every other
digitflow command starts without them.
"""

from __future__ import annotations

from pathlib import Path

import click

from flows.paths import default_registry
from flows.registry.aliases import PRODUCTION


@click.command(
    "report",
    epilog="""\b
Examples:
  digitflow report                      # the production version -> report.html
  digitflow report v3 --registry s3://bucket/models --output v3.html
  digitflow report --predictions predictions.parquet --input scans/ --output scans.html""",
)
@click.argument("version", required=False)
@click.option("--registry", help="Model registry: folder or fsspec URL. [DIGITFLOW_HOME/models]")
@click.option(
    "--predictions",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Report on this batch-predict output (.parquet, .csv or .jsonl) instead.",
)
@click.option(
    "--input",
    "input_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="With --predictions: the folder that was scored, to show the least confident images.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="Where to write the HTML page.",
)
def report(
    version: str | None,
    registry: str | None,
    predictions: Path | None,
    input_dir: Path | None,
    output: Path,
) -> None:
    """Write one self-contained HTML page (images inlined) about a published VERSION (v3, 3, or
    an alias: production, latest...; default production, which is latest until a first
    promotion) or, with --predictions, about batch-predict output."""
    if predictions is not None and (version or registry):
        raise click.UsageError("give either a VERSION (and --registry) or --predictions")
    if input_dir is not None and predictions is None:
        raise click.UsageError("--input goes with --predictions")
    from flows.reports.pages import write_report

    spec = f"{registry or default_registry()}@{version or PRODUCTION}"
    page = write_report(output, spec, predictions, input_dir)
    click.echo(f"wrote {output} ({len(page) / 1e6:.1f} MB; open it in a browser)")
