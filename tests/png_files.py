"""PNG files built byte by byte, for tests that need layouts Pillow does not write."""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _paeth(left: int, up: int, up_left: int) -> int:
    estimate = left + up - up_left
    distances = (abs(estimate - left), abs(estimate - up), abs(estimate - up_left))
    return (left, up, up_left)[distances.index(min(distances))]


def filtered_row(row: np.ndarray, prior: np.ndarray, kind: int) -> bytes:
    """One 8-bit grayscale scanline with PNG filter `kind` (0 None, 1 Sub, 2 Up, 3 Average,
    4 Paeth) applied, its filter byte first (PNG spec, section 9)."""
    out = [kind]
    for i, (value, up) in enumerate(zip(row.tolist(), prior.tolist(), strict=True)):
        left = int(row[i - 1]) if i else 0
        up_left = int(prior[i - 1]) if i else 0
        predictor = (0, left, up, (left + up) // 2, _paeth(left, up, up_left))[kind]
        out.append((value - predictor) % 256)
    return bytes(out)


def gray_png(pixels: np.ndarray, filters: list[int], idat_chunks: int = 1) -> bytes:
    """An 8-bit grayscale PNG of `pixels` `(h, w)` uint8, row r filtered with filters[r % len],
    its compressed data split over `idat_chunks` IDAT chunks."""
    height, width = pixels.shape
    prior = np.zeros(width, np.uint8)
    scanlines = b""
    for r, row in enumerate(pixels):
        scanlines += filtered_row(row, prior, filters[r % len(filters)])
        prior = row
    data = zlib.compress(scanlines, 9)
    step = -(-len(data) // idat_chunks)
    idat = b"".join(chunk(b"IDAT", data[i : i + step]) for i in range(0, len(data), step))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")
