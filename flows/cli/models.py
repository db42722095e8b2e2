"""`digitflow models ...`: what the registry holds, and which version each alias names.

digitflow models list [--registry data/models] [--json]       # every alias marked
digitflow models show v3 [--registry data/models] [--json]    # verifies every checksum
digitflow models promote v3 [--alias production] [--reason TEXT]
digitflow models rollback [--alias production]                # back to the holder before
digitflow models history [--alias production] [--json]        # every move, oldest first
digitflow models compare v2 v3 [--json] [--output compare.html]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from flows.paths import default_registry
from flows.registry.aliases import PRODUCTION, read_history
from flows.registry.manifest import network_facts
from flows.registry.promotion import promote, rollback
from flows.registry.versions import load_published, version_summaries

REGISTRY_HELP = "Model registry: folder or fsspec URL. [default DIGITFLOW_HOME/models]"
ALIAS_HELP = "The alias to move (production, or a name of yours: staging, canary...)."


@click.group(
    epilog="""\b
Examples:
  digitflow models list
  digitflow models show latest --json
  digitflow models promote v3 --reason "reviewed the comparison"
  digitflow models rollback
  digitflow models history --alias production"""
)
def models() -> None:
    """List, inspect, promote, roll back and compare the published model versions."""


@models.command(
    "list",
    epilog="""\b
Examples:
  digitflow models list
  digitflow models list --registry s3://bucket/models --json""",
)
@click.option("--registry", help=REGISTRY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list on stdout.")
def list_command(registry: str | None, as_json: bool) -> None:
    """List the published versions, oldest first; * marks `latest`, the last column every alias."""
    registry = registry or default_registry()
    rows = version_summaries(registry)
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(f"no published versions in {registry} (publish one with: digitflow train)")
        return
    # The MLP's layers as its widths (784-128-10), any other network as NetworkConfig.describe().
    layers = {
        row["version"]: "-".join(map(str, row["layer_sizes"] or []))
        if row["arch"] in ("mlp", None)
        else row["layers"]
        for row in rows
    }
    width = max(16, *(len(text) + 2 for text in layers.values()))
    click.echo(
        f"{'':2}{'version':<9}{'published (UTC)':<27}{'test acc':>9}  {'arch':<6}"
        f"{'layers':<{width}}{'epochs':<8}aliases"
    )
    for row in rows:
        accuracy = row["test_accuracy"]
        click.echo(
            f"{'*' if row['latest'] else ' ':2}{row['version']:<9}{row['published_at'] or '?':<27}"
            f"{f'{accuracy:.2%}' if accuracy is not None else '?':>9}  {row['arch'] or '?':<6}"
            f"{layers[row['version']]:<{width}}{row['epochs'] or '?'!s:<8}"
            f"{', '.join(row['aliases'])}".rstrip()
        )
    if not any(PRODUCTION in row["aliases"] for row in rows):
        latest = next((row["version"] for row in rows if row["latest"]), rows[-1]["version"])
        click.echo(
            f"{PRODUCTION} was never promoted: predict, report and the inbox use latest "
            f"({latest}) until digitflow models promote (or digitflow train) sets it"
        )


def _move_options(command: Callable[..., None]) -> Callable[..., None]:
    """--alias, --reason and --registry: what every command that moves an alias takes."""
    for option in reversed(
        [
            click.option("--alias", default=PRODUCTION, show_default=True, help=ALIAS_HELP),
            click.option("--reason", default="", help="Why, recorded in the alias history."),
            click.option("--registry", help=REGISTRY_HELP),
        ]
    ):
        command = option(command)
    return command


@models.command(
    "promote",
    epilog="""\b
Examples:
  digitflow models promote v3
  digitflow models promote 3 --reason "beat v2 on the holdout scans"
  digitflow models promote latest --alias staging --registry s3://bucket/models""",
)
@click.argument("version")
@_move_options
def promote_command(version: str, alias: str, reason: str, registry: str | None) -> None:
    """Point an alias at VERSION (v3, 3, or an alias such as latest), after verifying every
    checksum of it; the move is recorded in the alias history with you as its author."""
    entry = promote(registry or default_registry(), version, alias, reason)
    click.echo(_moved(entry))


@models.command(
    "rollback",
    epilog="""\b
Examples:
  digitflow models rollback
  digitflow models rollback --alias staging --reason 'drifted on new scans'""",
)
@_move_options
def rollback_command(alias: str, reason: str, registry: str | None) -> None:
    """Move an alias back to the version it named before (verified first); recorded as a move
    of its own. Rolling back again goes further back."""
    entry = rollback(registry or default_registry(), alias, reason)
    click.echo(_moved(entry))


@models.command(
    "history",
    epilog="""\b
Examples:
  digitflow models history
  digitflow models history --alias production --json""",
)
@click.option("--alias", help="Only this alias's moves.")
@click.option("--registry", help=REGISTRY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of the moves on stdout.")
def history_command(alias: str | None, registry: str | None, as_json: bool) -> None:
    """Every move of the aliases, oldest first: when, which alias, from and to which version,
    why and by whom. The history's checksum chain is verified first."""
    registry = registry or default_registry()
    entries = [e for e in read_history(registry).entries if alias in (None, e["alias"])]
    if as_json:
        click.echo(json.dumps(entries))
        return
    if not entries:
        click.echo(f"no alias moves in {registry}" + (f" for {alias}" if alias else ""))
        return
    for entry in entries:
        click.echo(
            f"{entry['seq']:>4}  {entry['time']}  {entry['alias']}: "
            f"{entry['from'] or '-'} -> {entry['to']}  ({entry['action']} by {entry['by']})\n"
            f"{'':6}{entry['reason']}"
        )


@models.command(
    "compare",
    epilog="""\b
Examples:
  digitflow models compare production latest
  digitflow models compare v2 v3 --json
  digitflow models compare v2 v3 --output compare.html --source ../shared/data/mnist

The test set: the images the last digitflow train prepared under DIGITFLOW_HOME, else the MNIST
source (--source or DIGITFLOW_MNIST_SOURCE) when it is a local folder.""",
)
@click.argument("first")
@click.argument("second")
@click.option("--registry", help=REGISTRY_HELP)
@click.option(
    "--source",
    help="Compare on this MNIST folder's test split (Parquet) instead of the prepared test set.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as one JSON object.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write an HTML page: the confusion-matrix difference and the test images one of "
    "them gets right and the other wrong.",
)
def compare_command(
    first: str,
    second: str,
    registry: str | None,
    source: str | None,
    as_json: bool,
    output: Path | None,
) -> None:
    """Compare two versions (or aliases) on the same test set: accuracy and per-digit recall
    deltas, agreement, and the exact McNemar test on the images only one of them gets right."""
    from flows.reports.comparison import compare_versions, comparison_text, write_comparison_page
    from flows.training.champion import predicted_classes, test_set

    registry = registry or default_registry()
    models = [load_published(f"{registry}@{name}") for name in (first, second)]
    pixels, labels, described = test_set(source)
    predictions = [predicted_classes(model.network, pixels) for model in models]
    named = [(model.version, found) for model, found in zip(models, predictions, strict=True)]
    comparison = compare_versions(labels, named[0], named[1], described)
    if output is not None:
        write_comparison_page(output, comparison, pixels, labels, *predictions)
    if as_json:
        click.echo(json.dumps(comparison | {"output": str(output) if output else None}))
        return
    click.echo(comparison_text(comparison))
    if output is not None:
        click.echo(f"wrote {output}")


def _moved(entry: dict[str, Any]) -> str:
    what = "rolled back" if entry["action"] == "rollback" else "promoted"
    return (
        f"{entry['alias']}: {entry['from'] or '-'} -> {entry['to']} ({what}; alias history "
        f"entry {entry['seq']})"
    )


@models.command(
    "show",
    epilog="""\b
Examples:
  digitflow models show latest
  digitflow models show production
  digitflow models show v3 --json
  digitflow models show v1 --registry s3://bucket/models""",
)
@click.argument("version", default="latest")
@click.option("--registry", help=REGISTRY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def show_command(version: str, registry: str | None, as_json: bool) -> None:
    """Verify a version's checksums; show its metrics and provenance (VERSION: latest, v3, 3,
    or an alias such as production)."""
    model = load_published(f"{registry or default_registry()}@{version}")
    manifest, metrics = model.manifest, model.metrics
    if as_json:
        document = {
            "version": model.version,
            "location": model.location,
            "verified": True,
            "manifest": manifest,
            "metrics": metrics,
        }
        click.echo(json.dumps(document))
        return
    click.echo("\n".join(_describe(model.version, model.location, manifest, metrics)))


def _describe(
    version: str, location: str, manifest: dict[str, Any], metrics: dict[str, Any]
) -> list[str]:
    config = manifest.get("config", {})
    training = config.get("training", {})
    facts = network_facts(config.get("network"))
    data = manifest.get("data", {})
    git = manifest.get("git") or {}
    lines = [
        f"{version}  {location}",
        f"  checksums       verified ({len(manifest['files'])} files)",
        f"  published       {manifest.get('published_at')}",
        f"  test accuracy   {metrics.get('test_accuracy', float('nan')):.2%}",
        f"  architecture    {facts['summary'] or '?'}",
        f"  network         {facts['layers'] or '?'}",
        f"  training        {training.get('epochs')} epochs, batch {training.get('batch_size')}, "
        f"lr {training.get('learning_rate')}, seed {training.get('seed')}",
        f"  data            {data.get('source')}",
        f"  code            {git.get('commit') or 'unknown'}"
        + (" (uncommitted changes)" if git.get("dirty") else ""),
        f"  flow run        {(manifest.get('flow_run') or {}).get('name')}",
    ]
    pairs = metrics.get("most_confused", [])[:3]
    if pairs:
        shown = ", ".join(f"{p['true']}->{p['predicted']} ({p['count']})" for p in pairs)
        lines.append(f"  most confused   {shown}")
    return lines
