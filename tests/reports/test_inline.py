"""Inlining figures as data: URIs, in Markdown (Prefect artifacts) and in HTML pages."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.reports.inline import data_uri, figures_markdown, html_page, inline_images


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "figures" / "plot.png"
    path.parent.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_data_uri_holds_the_file_bytes(png: Path) -> None:
    uri = data_uri(png)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == png.read_bytes()


def test_figures_markdown_shows_each_caption_and_image(png: Path) -> None:
    text = figures_markdown([("First", png), ("Second", png)])
    assert text.count(f"]({data_uri(png)})") == 2
    assert "**First**" in text and "**Second**" in text


def test_inline_images_replaces_only_relative_links_to_existing_files(png: Path) -> None:
    card = (
        "# Card\n\n![Plot](figures/plot.png)\n\n![Gone](figures/missing.png)\n\n"
        "![Remote](https://example.org/x.png)\n\n[a link](figures/plot.png)\n"
    )
    inlined = inline_images(card, png.parent.parent)
    assert f"![Plot]({data_uri(png)})" in inlined
    assert "![Gone](figures/missing.png)" in inlined
    assert "![Remote](https://example.org/x.png)" in inlined
    assert "[a link](figures/plot.png)" in inlined  # not an image: left alone


def test_html_page_inlines_figures_and_escapes_text(png: Path) -> None:
    page = html_page(
        "A <title>",
        "sub & title",
        [("Summary", (), [("name", "<b>value</b>")]), ("Per digit", ("digit", "n"), [(3, 7)])],
        [("Caption <1>", png)],
    )
    assert page.startswith("<!DOCTYPE html>")
    assert "<h1>A &lt;title&gt;</h1>" in page and "sub &amp; title" in page
    assert "<td>&lt;b&gt;value&lt;/b&gt;</td>" in page
    assert "<tr><th>digit</th><th>n</th></tr>" in page and "<tr><th>3</th><td>7</td></tr>" in page
    assert f'<img src="{data_uri(png)}" alt="{html.escape("Caption <1>")}" width="40"' in page
