"""Figures inlined as data: URIs, so a page or an artifact needs no file access to show them.

    page = html_page("Title", "subtitle", tables, [("Caption", Path("fig.png"))])
    figures_markdown([("Caption", Path("fig.png"))])  # Markdown for a Prefect artifact
    inline_images(model_card_text, version_folder)  # relative ![..](figures/x.png) -> data: URIs

The Prefect UI renders Markdown artifacts, data: image URIs included; `digitflow report` writes
the HTML pages.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

# (caption, PNG file)
Figure = tuple[str, Path]
# (heading, column headers (may be empty), rows); a row's first cell is its name.
Table = tuple[str, Sequence[str], Sequence[Sequence[object]]]

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1040px; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } .subtitle { color: #666; margin-top: 0; }
h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 0.2rem 1.2rem 0.2rem 0; border-bottom: 1px solid #eee; }
th { color: #555; font-weight: 600; }
figure { margin: 1.5rem 0; } figcaption { color: #444; margin-bottom: 0.4rem; font-weight: 600; }
figure img { max-width: 100%; height: auto; }
"""
# A Markdown image with a relative link: ![caption](figures/x.png)
RELATIVE_IMAGE = re.compile(r"!\[([^\]]*)\]\((?![a-z][a-z0-9+.-]*:)([^)\s]+\.png)\)")


def data_uri(png: str | Path) -> str:
    """The PNG file as a `data:image/png;base64,...` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def figures_markdown(items: Sequence[Figure]) -> str:
    """Markdown that shows each figure under its caption, the image inlined."""
    return "\n\n".join(f"**{caption}**\n\n![{caption}]({data_uri(png)})" for caption, png in items)


def inline_images(markdown: str, folder: str | Path) -> str:
    """`markdown` with each relative PNG link that names a file under `folder` inlined."""
    folder = Path(folder)

    def replace(match: re.Match[str]) -> str:
        file = folder / match.group(2)
        return f"![{match.group(1)}]({data_uri(file)})" if file.is_file() else match.group(0)

    return RELATIVE_IMAGE.sub(replace, markdown)


def _table(heading: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    parts = [f"<h2>{html.escape(heading)}</h2>", "<table>"]
    if headers:
        parts.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>")
    for name, *cells in rows:
        values = "".join(f"<td>{html.escape(str(cell))}</td>" for cell in cells)
        parts.append(f"<tr><th>{html.escape(str(name))}</th>{values}</tr>")
    parts.append("</table>")
    return parts


def html_page(title: str, subtitle: str, tables: Sequence[Table], items: Sequence[Figure]) -> str:
    """A complete HTML document: the title, the tables, then the figures inlined."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="subtitle">{html.escape(subtitle)}</p>',
    ]
    for table in tables:
        parts += _table(*table)
    if items:
        parts.append("<h2>Figures</h2>")
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
