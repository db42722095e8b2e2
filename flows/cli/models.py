"""`digitflow models list` and `digitflow models show VERSION`: what the registry holds.

digitflow models list [--registry data/models] [--json]
digitflow models show v3 [--registry data/models] [--json]   # verifies every checksum
"""

from __future__ import annotations

import json
from typing import Any

import click

from flows.paths import default_registry
from flows.registry.versions import load_published, version_summaries

REGISTRY_HELP = "Model registry: folder or fsspec URL. [default DIGITFLOW_HOME/models]"


@click.group(
    epilog="""\b
Examples:
  digitflow models list
  digitflow models show latest --json"""
)
def models() -> None:
    """List and inspect the published model versions."""


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
    """List the published versions, oldest first; * marks `latest`."""
    registry = registry or default_registry()
    rows = version_summaries(registry)
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(f"no published versions in {registry} (publish one with: digitflow train)")
        return
    click.echo(f"{'':2}{'version':<9}{'published (UTC)':<27}{'test acc':>9}  {'layers':<16}epochs")
    for row in rows:
        accuracy = row["test_accuracy"]
        click.echo(
            f"{'*' if row['latest'] else ' ':2}{row['version']:<9}{row['published_at'] or '?':<27}"
            f"{f'{accuracy:.2%}' if accuracy is not None else '?':>9}  "
            f"{'-'.join(map(str, row['layer_sizes'] or [])):<16}{row['epochs'] or '?'}"
        )


@models.command(
    "show",
    epilog="""\b
Examples:
  digitflow models show latest
  digitflow models show v3 --json
  digitflow models show v1 --registry s3://bucket/models""",
)
@click.argument("version", default="latest")
@click.option("--registry", help=REGISTRY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def show_command(version: str, registry: str | None, as_json: bool) -> None:
    """Verify a version's checksums; show its metrics and provenance (VERSION: latest, v3, 3)."""
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
    network, training = config.get("network", {}), config.get("training", {})
    data = manifest.get("data", {})
    git = manifest.get("git") or {}
    lines = [
        f"{version}  {location}",
        f"  checksums       verified ({len(manifest['files'])} files)",
        f"  published       {manifest.get('published_at')}",
        f"  test accuracy   {metrics.get('test_accuracy', float('nan')):.2%}",
        f"  network         {'-'.join(map(str, network.get('layer_sizes', [])))} "
        f"{network.get('activation', '')}",
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
