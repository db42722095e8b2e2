"""`digitflow report`: one self-contained HTML page (every image inlined) about a published
version, or about batch-predict output.

    digitflow report                                  # the production version -> report.html
    digitflow report v3 --registry s3://bucket/models --output v3.html
    digitflow report --predictions predictions.parquet --input scans/ --output scans.html

The version page verifies the version's checksums, then shows its metrics and the figures it was
published with (training curves, confusion matrix, confident mistakes, first-layer weights). The
predictions page shows a class histogram, a confidence histogram and the least confident images
as the network saw them (read again from the --input folder, through netcore.images).
`write_report(output, spec, predictions, input_dir)` does either from Python; the command is in
flows/cli/report.py.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flows.paths import FIGURES_DIR, METRICS_FILE
from flows.predict.output import listed_names, read_predictions
from flows.registry.manifest import network_facts, verify
from flows.registry.store import RegistryError
from flows.registry.versions import DEFAULT_ALIAS, resolve, split_spec
from flows.reports import figures
from flows.reports.inline import Figure, Table, html_page
from netcore.errors import DataFileError
from netcore.images import load_digits
from netcore.io import write_atomic, writing

LEAST_CONFIDENT = figures.GRID_COLUMNS * figures.GRID_ROWS


def least_confident(table: pa.Table, count: int) -> pa.Table:
    """Up to `count` scored rows (no error), the least confident first."""
    scored = table.filter(pc.is_valid(table["label"]))
    return scored.take(pc.sort_indices(scored["confidence"])[:count])


def input_file(root: Path, relative: str) -> Path:
    """`root / relative`, refused (DataFileError) if it resolves outside `root`: the paths come
    from the predictions file, and a report must not read files elsewhere on the machine."""
    file = (root / relative).resolve()
    if not file.is_relative_to(root.resolve()):
        raise DataFileError(file, f"outside the input folder {root}")
    return file


def least_confident_images(
    table: pa.Table, input_dir: Path, count: int = LEAST_CONFIDENT
) -> tuple[np.ndarray, list[str]]:
    """The `count` least confident scored images as the network saw them, read again from
    `input_dir` through netcore.images, with captions; blank where a file cannot be read now."""
    chosen = least_confident(table, count)
    rows = chosen.to_pylist()
    files = []
    for name in listed_names(chosen):  # the names that open the files: path_hex where needed
        try:
            files.append(str(input_file(input_dir, name)))
        except DataFileError:
            files.append("")  # load_digits reports it as unreadable
    pixels, problems = load_digits(files)
    captions = []
    for row, problem in zip(rows, problems, strict=True):
        name = Path(row["path"]).name
        short = name if len(name) <= 18 else f"{name[:7]}...{name[-8:]}"
        detail = "(cannot read)" if problem else f"{row['confidence']:.0%}"
        captions.append(f"said {row['label']}, {detail}\n{short}")
    return pixels, captions


def predictions_page(predictions: Path, input_dir: Path | None, workdir: Path) -> str:
    """The HTML report for a batch-predict output file; figures are drawn into `workdir`."""
    table = read_predictions(predictions)
    scored = table.filter(pc.is_valid(table["label"]))
    labels = scored["label"].to_numpy().astype(np.int64)
    confidences = scored["confidence"].to_numpy().astype(np.float64)
    items: list[Figure] = [
        ("How many images got each digit", figures.class_histogram(labels, workdir / "c.png")),
        ("How sure the network was", figures.confidence_histogram(confidences, workdir / "h.png")),
    ]
    if input_dir is not None:
        pixels, captions = least_confident_images(table, input_dir)
        title = f"Least confident, as the network saw them (from {input_dir})"
        grid = figures.image_grid(list(pixels), captions, workdir / "least.png", title)
        items.append(("The images it was least sure about", grid))
    versions = [v for v in table["model_version"].unique().to_pylist() if v is not None]
    summary = [
        ("predictions file", str(predictions)),
        ("images", table.num_rows),
        ("scored", scored.num_rows),
        ("failed", table.num_rows - scored.num_rows),
        ("model version", ", ".join(versions) or "unknown"),
        ("median confidence", f"{np.median(confidences):.1%}" if len(confidences) else "n/a"),
    ]
    if input_dir is None:
        summary.append(("least confident images", "pass --input FOLDER to show them"))
    tables: list[Table] = [("Summary", (), summary)]
    errors = table.filter(pc.is_valid(table["error"]))["error"].value_counts().to_pylist()
    if errors:
        errors.sort(key=lambda item: -item["counts"])
        rows = [(e["values"], e["counts"]) for e in errors[:10]]
        tables.append(("Most common errors", ("reason", "files"), rows))
    return html_page(
        f"Predictions: {predictions.name}", "digitflow batch-predict report", tables, items
    )


def fetch_version(spec: str, into: Path) -> tuple[str, dict[str, Any]]:
    """Copy the version `spec` ("REGISTRY[@VERSION]") into `into` and verify every checksum of
    the copy; returns (its location, its manifest). Works for any fsspec registry."""
    registry, version = split_spec(spec)
    location = resolve(registry, version or DEFAULT_ALIAS)
    fs, folder = fsspec.core.url_to_fs(location)
    fs.get(folder.rstrip("/") + "/", str(into) + "/", recursive=True)
    # Verify the bytes the page is built from, so nothing can change in between.
    return location, verify(str(into), shown_as=location)


def _percent(value: Any) -> str:
    return f"{value:.2%}" if isinstance(value, int | float) else "?"


def version_page(folder: Path, location: str, manifest: dict[str, Any]) -> str:
    """The HTML report for a verified copy of a published version in `folder`."""
    if not (folder / METRICS_FILE).is_file():
        raise RegistryError(f"{location}/{METRICS_FILE}: missing; the report needs the metrics")
    metrics = json.loads((folder / METRICS_FILE).read_text())
    training = metrics.get("training", {})
    facts = network_facts(manifest.get("config", {}).get("network"))
    flow_run = manifest.get("flow_run") or {}
    summary = [
        ("test accuracy", _percent(metrics.get("test_accuracy"))),
        ("test loss", f"{metrics.get('test_loss', float('nan')):.4f}"),
        ("test images", metrics.get("test_examples", "?")),
        ("architecture", facts["summary"] or "?"),
        ("network", facts["layers"] or "?"),
        (
            "epochs",
            f"{training.get('epochs', '?')} (weights of epoch {training.get('best_epoch', '?')})",
        ),
        ("training time", f"{training.get('train_seconds', float('nan')):.1f} s"),
        ("published", manifest.get("published_at", "?")),
        ("code", (manifest.get("git") or {}).get("commit") or "unknown"),
        ("flow run", f"{flow_run.get('name', '?')} ({flow_run.get('id', '?')})"),
    ]
    per_class = [
        (row["digit"], _percent(row["precision"]), _percent(row["recall"]), row["support"])
        for row in metrics.get("per_class", [])
    ]
    confused = [
        (pair["true"], pair["predicted"], pair["count"])
        for pair in metrics.get("most_confused", [])
    ]
    items = figures.existing_figures(folder / FIGURES_DIR)
    if not items:
        summary.append(("figures", "none: this version was published without figures"))
    tables: list[Table] = [
        ("Summary", (), summary),
        ("Per digit", ("digit", "precision", "recall", "test images"), per_class),
        ("Most confused", ("true digit", "taken for", "times"), confused),
    ]
    version = manifest.get("version", "?")
    subtitle = f"{location} (all {len(manifest['files'])} checksums verified)"
    return html_page(f"digitflow MNIST model {version}", subtitle, tables, items)


def write_report(
    output: Path, spec: str, predictions: Path | None = None, input_dir: Path | None = None
) -> str:
    """Write the page for `predictions` (with images from `input_dir`) or, without them, for the
    version `spec` ("REGISTRY[@VERSION]"), to `output` atomically; returns the page."""
    with tempfile.TemporaryDirectory(prefix="digitflow-report-") as work, writing(work):
        if predictions is not None:
            page = predictions_page(predictions, input_dir, Path(work))
        else:
            location, manifest = fetch_version(spec, Path(work))
            page = version_page(Path(work), location, manifest)
    write_atomic(output, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return page
