"""`digitflow report`: one self-contained HTML page (every image inlined) about a published
version or about batch-predict output.

    digitflow report                      # the latest version -> report.html
    digitflow report v3 --output v3.html
    digitflow report --predictions data/predictions/scans.parquet --input scans/

The version page shows the version's metrics and the figures it was published with (training
curves, confusion matrix, confident mistakes, first-layer weights); the predictions page shows a
class histogram, a confidence histogram and the least confident images. `figures_markdown` gives
the same figures as Markdown with data: URIs, for Prefect artifacts.
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.json
import pyarrow.parquet as pq
from PIL import Image

from flows import figures
from netcore.errors import DataFileError, NetcoreError

# (caption, PNG file)
Figure = tuple[str, Path]
# (heading, rows of (name, value))
Table = tuple[str, Sequence[tuple[str, str]]]

PREDICTION_COLUMNS = ("path", "label", "confidence", "error")
# Images larger than this are not decoded just to draw a thumbnail (decompression bombs).
MAX_DISPLAY_PIXELS = 50_000_000

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1040px; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } .subtitle { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { text-align: left; padding: 0.25rem 1rem 0.25rem 0; border-bottom: 1px solid #eee; }
th { color: #555; font-weight: 600; }
figure { margin: 1.5rem 0; } figcaption { color: #555; margin-bottom: 0.4rem; font-weight: 600; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
"""


def data_uri(png: str | Path) -> str:
    """The PNG file as a `data:image/png;base64,...` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def figures_markdown(items: Sequence[Figure]) -> str:
    """Markdown that shows each figure with its image inlined, so the Prefect UI can show it
    without access to the files."""
    return "\n\n".join(f"**{caption}**\n\n![{caption}]({data_uri(png)})" for caption, png in items)


def html_page(title: str, subtitle: str, tables: Sequence[Table], items: Sequence[Figure]) -> str:
    """A complete HTML document: title, tables of name/value rows, then the figures inlined."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="subtitle">{html.escape(subtitle)}</p>',
    ]
    for heading, rows in tables:
        parts.append(f"<h2>{html.escape(heading)}</h2><table>")
        parts += [
            f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
            for name, value in rows
        ]
        parts.append("</table>")
    for caption, png in items:
        with Image.open(png) as image:
            width, height = image.size
        parts.append(
            f"<figure><figcaption>{html.escape(caption)}</figcaption>"
            f'<img src="{data_uri(png)}" alt="{html.escape(caption)}" '
            f'width="{width}" height="{height}"></figure>'
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_page(page: str, output: str | Path) -> Path:
    """Write `page` atomically: a reader never sees half a report."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(output)
    return output


def read_predictions(path: str | Path) -> pa.Table:
    """A batch-predict output file (.parquet, .csv or .jsonl); a DataFileError naming the file
    if it cannot be read or lacks the prediction columns."""
    path = Path(path)
    readers = {".parquet": pq.read_table, ".csv": pa.csv.read_csv, ".jsonl": pa.json.read_json}
    reader = readers.get(path.suffix.lower())
    if not path.is_file():
        raise DataFileError(path, "predictions file not found")
    if reader is None:
        raise DataFileError(
            path, f"unknown predictions format {path.suffix!r} (.parquet, .csv, .jsonl)"
        )
    try:
        table = reader(path)
    except (OSError, pa.ArrowException) as error:
        raise DataFileError(path, f"cannot read predictions ({error})") from None
    missing = [name for name in PREDICTION_COLUMNS if name not in table.column_names]
    if missing:
        raise DataFileError(path, f"not batch-predict output: missing column(s) {missing}")
    return table


def least_confident(table: pa.Table, count: int) -> pa.Table:
    """Up to `count` scored rows (no error), the least confident first."""
    scored = table.filter(pc.is_valid(table["label"]))
    return scored.take(pc.sort_indices(scored["confidence"])[:count])


def input_file(root: Path, relative: str) -> Path:
    """`root / relative`, refused (DataFileError) if it resolves outside `root`: paths come from
    the predictions file, and a report must not read files elsewhere on the machine."""
    file = (root / relative).resolve()
    if not file.is_relative_to(root.resolve()):
        raise DataFileError(file, f"outside the input folder {root}")
    return file


def display_image(path: Path, side: int = 112, max_pixels: int = MAX_DISPLAY_PIXELS) -> np.ndarray:
    """The image file as a person sees it, grayscale, shrunk to fit `side` pixels (transparent
    parts shown as white paper). Refuses images over `max_pixels` before decoding them."""
    with Image.open(path) as image:
        if image.width * image.height > max_pixels:
            raise DataFileError(path, f"image is {image.width}x{image.height}, too large to show")
        image.draft("L", (side, side))  # a JPEG decodes at reduced size: cheap for big photos
        rgba = image.convert("RGBA")
    paper = Image.new("RGBA", rgba.size, "white")
    paper.alpha_composite(rgba)
    gray = paper.convert("L")
    gray.thumbnail((side, side))
    return np.asarray(gray)


def least_confident_grid(table: pa.Table, input_dir: Path, png: Path) -> Path:
    """The least confident scored images, read from `input_dir`, as an image grid."""
    images, captions = [], []
    for row in least_confident(table, figures.GRID_COLUMNS * figures.GRID_ROWS).to_pylist():
        name = Path(row["path"]).name
        short = name if len(name) <= 18 else name[:7] + "..." + name[-8:]
        try:
            images.append(display_image(input_file(input_dir, row["path"])))
            captions.append(f"said {row['label']}, {row['confidence']:.0%}\n{short}")
        except (OSError, DataFileError):
            images.append(np.full((28, 28), 255, dtype=np.uint8))
            captions.append(f"{short}\n(cannot read)")
    title = f"Least confident images (from {input_dir})"
    return figures.image_grid(images, captions, png, title, bright_ink=False)


def predictions_page(predictions: Path, input_dir: Path | None, workdir: Path) -> str:
    """The HTML report for a batch-predict output file; figures are drawn into `workdir`."""
    table = read_predictions(predictions)
    scored = table.filter(pc.is_valid(table["label"]))
    labels = scored["label"].to_numpy().astype(np.int64)
    confidences = scored["confidence"].to_numpy().astype(np.float64)
    items: list[Figure] = [
        ("Predicted classes", figures.class_histogram(labels, workdir / "classes.png")),
        ("Confidence", figures.confidence_histogram(confidences, workdir / "confidence.png")),
    ]
    if input_dir is not None:
        grid = least_confident_grid(table, input_dir, workdir / "least-confident.png")
        items.append(("Least confident images", grid))
    versions = (
        table["model_version"].unique().to_pylist() if "model_version" in table.column_names else []
    )
    summary = [
        ("predictions file", str(predictions)),
        ("images", str(table.num_rows)),
        ("scored", str(scored.num_rows)),
        ("failed", str(table.num_rows - scored.num_rows)),
        ("model version", ", ".join(str(v) for v in versions if v is not None) or "unknown"),
        ("median confidence", f"{np.median(confidences):.1%}" if len(confidences) else "n/a"),
    ]
    if input_dir is None:
        summary.append(("least confident images", "pass --input FOLDER to show them"))
    errors = table.filter(pc.is_valid(table["error"]))["error"].value_counts().to_pylist()
    errors = sorted(errors, key=lambda item: -item["counts"])[:10]
    tables: list[Table] = [("Summary", summary)]
    if errors:
        tables.append(("Most common errors", [(e["values"], str(e["counts"])) for e in errors]))
    title = f"Predictions: {predictions.name}"
    return html_page(title, "digitflow batch-predict report", tables, items)


@click.command("report")
@click.option(
    "--predictions",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Batch-predict output (.parquet, .csv or .jsonl) to report on.",
)
@click.option(
    "--input",
    "input_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The folder the predictions were made on, to show the least confident images.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="Where to write the HTML page.",
)
def report(predictions: Path | None, input_dir: Path | None, output: Path) -> None:
    """Write one self-contained HTML page (images inlined) about batch-predict output.

    \b
    Example:
      digitflow report --predictions predictions.parquet --input scans/ --output scans.html
    """
    if predictions is None:
        raise click.UsageError("give --predictions FILE")
    try:
        with tempfile.TemporaryDirectory(prefix="digitflow-report-") as work:
            page = predictions_page(predictions, input_dir, Path(work))
    except NetcoreError as error:
        raise click.ClickException(str(error)) from None
    write_page(page, output)
    click.echo(f"wrote {output} ({len(page) / 1e6:.1f} MB, open it in a browser)")
