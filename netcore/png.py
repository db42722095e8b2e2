"""A fast path for the commonest digit file: a small 8-bit grayscale PNG (MNIST-like crops).

    plain = parse_plain_gray(data, max_pixels, max_side)   # PlainGray, or None: use Pillow
    pixels = unfilter([plain, ...])                         # [(h, w) uint8, ...]

For a file of a few hundred bytes, most of what `Image.open(path).load()` costs is Pillow's Python
code around its decoder (format detection, the chunk reader, the tile machinery, one image object
per file). This path reads the chunks itself, inflates the image data with zlib, and leaves to
Pillow's C decoder only the part that is slow in Python, undoing the PNG row filters, for many
images at once: their rows stacked into one tall image, one call. It costs a fraction of the
general path's CPU (docs/benchmarks.md, "Batch prediction").

Stacking is exact: every PNG row carries its own filter type, and a filter only looks at the
row above, so an all-zero row (filter 0) between two images gives the second one the zero row
above its first row that PNG prescribes.

Only the plainest files take this path: 8-bit grayscale, not interlaced, no transparency, no
critical chunk other than IHDR, IDAT and IEND, every chunk's CRC correct, image data that
inflates to exactly the rows it should, with valid filter types, sides up to `max_side` and at
most `max_pixels`. For anything else, including any irregularity (truncated, corrupted), it
returns None and the caller decodes the file the general way, which also words the error: this
path never decides that a file is bad.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Every PNG starts with the signature, the IHDR chunk's length (always 13) and type, then width and
# height (4 bytes each, big-endian), bit depth and colour type: HEADER_BYTES in all.
IHDR_START = SIGNATURE + b"\x00\x00\x00\rIHDR"
HEADER_BYTES = len(IHDR_START) + 10
COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}
# IHDR fields after width and height that this path takes: bit depth 8, colour type 0 (gray),
# compression 0, filter method 0, no interlace.
PLAIN_GRAY = (8, 0, 0, 0, 0)
# Critical chunks this path understands; any other critical one (PLTE...) goes the general way.
KNOWN_CRITICAL = frozenset({b"IHDR", b"IDAT", b"IEND"})
# The five PNG row filters are numbered 0-4.
MAX_FILTER = 4


@dataclass(frozen=True)
class PlainGray:
    """A plain grayscale PNG, inflated: `height` rows of a filter byte + `width` pixel bytes."""

    width: int
    height: int
    rows: bytes

    @property
    def size(self) -> int:
        """Pixels, as `ndarray.size` counts them for a decoded image."""
        return self.width * self.height


def parse_plain_gray(data: bytes, max_pixels: int, max_side: int) -> PlainGray | None:
    """The inflated rows of a plain 8-bit grayscale PNG held in `data`, or None when the file is
    anything else (see the module docstring)."""
    if not data.startswith(SIGNATURE):
        return None
    view = memoryview(data)  # chunks are looked at in place, not copied
    size, idat, position = None, [], len(SIGNATURE)
    while True:
        if position + 8 > len(data):
            return None  # no IEND: truncated
        length, kind = struct.unpack_from(">I4s", data, position)
        body_end = position + 8 + length
        if body_end + 4 > len(data):
            return None
        # The CRC covers the chunk's type and body, which lie side by side.
        (crc,) = struct.unpack_from(">I", data, body_end)
        if zlib.crc32(view[position + 4 : body_end]) != crc:
            return None
        body = view[position + 8 : body_end]
        if kind == b"IHDR" and length == 13:
            width, height, *layout = struct.unpack(">IIBBBBB", body)
            if tuple(layout) != PLAIN_GRAY or not 0 < width * height <= max_pixels:
                return None
            if max(width, height) > max_side:
                return None
            size = (width, height)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        elif kind == b"tRNS" or (kind[0] & 0x20 == 0 and kind not in KNOWN_CRITICAL):
            return None  # transparency, a palette, or a critical chunk unknown here
        position = body_end + 4
    if size is None or not idat:
        return None
    width, height = size
    expected = height * (width + 1)
    inflater = zlib.decompressobj()
    try:
        # At most one byte more than the image needs: image data that inflates to gigabytes
        # (a zlib bomb) never gets to.
        rows = inflater.decompress(b"".join(idat), expected + 1)
    except zlib.error:
        return None
    if len(rows) != expected or max(rows[:: width + 1]) > MAX_FILTER:
        return None
    return PlainGray(width, height, rows)


@dataclass(frozen=True)
class Headers:
    """What the first HEADER_BYTES bytes of many files say, one entry per file: whether it is a
    PNG (`is_png`), and for those, `width`, `height`, `bit_depth` and `colour_type`."""

    is_png: np.ndarray
    width: np.ndarray
    height: np.ndarray
    bit_depth: np.ndarray
    colour_type: np.ndarray

    def describe(self, index: int) -> str:
        """e.g. "32x32 8-bit grayscale PNG"."""
        colour = int(self.colour_type[index])
        kind = COLOUR_TYPES.get(colour, f"colour type {colour}")
        return f"{self.width[index]}x{self.height[index]} {self.bit_depth[index]}-bit {kind} PNG"


def read_headers(starts: np.ndarray) -> Headers:
    """The PNG headers of many files at once: `starts` `(n, HEADER_BYTES)` uint8 holds each
    file's first bytes (zero-padded where a file is shorter: it then reads as no PNG)."""
    is_png = np.all(starts[:, : len(IHDR_START)] == np.frombuffer(IHDR_START, np.uint8), axis=1)
    big_endian = 256 ** np.arange(3, -1, -1)
    offset = len(IHDR_START)
    width = starts[:, offset : offset + 4].astype(np.int64) @ big_endian
    height = starts[:, offset + 4 : offset + 8].astype(np.int64) @ big_endian
    return Headers(is_png, width, height, starts[:, offset + 8], starts[:, offset + 9])


def unfilter(images: Sequence[PlainGray]) -> list[np.ndarray]:
    """The pixels `(height, width)` uint8 of each image, in order; images of the same width go
    through Pillow's PNG decoder together."""
    pixels: list[np.ndarray | None] = [None] * len(images)
    by_width: dict[int, list[int]] = {}
    for index, image in enumerate(images):
        by_width.setdefault(image.width, []).append(index)
    for width, members in by_width.items():
        separator = bytes(width + 1)  # filter 0, all zero
        stacked = separator.join(images[i].rows for i in members)
        height = sum(images[i].height for i in members) + len(members) - 1
        # Pillow's "zip" decoder inflates, then unfilters: a stored (level 0) stream is a copy.
        tall = Image.frombytes("L", (width, height), zlib.compress(stacked, 0), "zip", "L")
        values = np.frombuffer(tall.tobytes(), np.uint8).reshape(height, width)
        top = 0
        for i in members:
            pixels[i] = values[top : top + images[i].height]
            top += images[i].height + 1
    return pixels
