"""A fast path for the commonest digit file: a small 8-bit grayscale PNG (MNIST-like crops).

    pixels = plain_gray_png(data)      # (h, w) uint8, or None: use the general path (Pillow)

For a file of a few hundred bytes, most of what `Image.open(path).load()` costs is Pillow's Python
code around the decoder (format detection, the chunk reader, the tile machinery): about 45 us of
CPU per MNIST image here, against about 12 us for the same pixels when the chunks are read here
and only the decoding (zlib and the PNG row filters) is left to Pillow's own C decoder. That
halves the CPU per image of batch prediction (docs/benchmarks.md, "Batch prediction").

Only the plainest files take this path: 8-bit grayscale, not interlaced, no transparency, no
chunk this reader does not know that the PNG spec calls critical, every chunk's CRC correct,
sides up to `max_side`, at most `max_pixels`. For anything else, including any irregularity
(truncated, corrupted), it returns None and the caller decodes the file the general way, which
also words the error: this path never decides that a file is bad.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IHDR fields after width and height that this path takes: bit depth 8, colour type 0 (gray),
# compression 0, filter method 0, no interlace.
PLAIN_GRAY = (8, 0, 0, 0, 0)
# Critical chunks this path understands; any other critical one (PLTE...) goes the general way.
KNOWN_CRITICAL = frozenset({b"IHDR", b"IDAT", b"IEND"})


def plain_gray_png(data: bytes, max_pixels: int, max_side: int) -> np.ndarray | None:
    """The pixels `(height, width)` uint8 of a plain 8-bit grayscale PNG held in `data`, or None
    when the file is anything else (see the module docstring)."""
    if not data.startswith(SIGNATURE):
        return None
    size, idat, position = None, [], len(SIGNATURE)
    while True:
        if position + 8 > len(data):
            return None  # no IEND: truncated
        length, kind = struct.unpack_from(">I4s", data, position)
        body_end = position + 8 + length
        if body_end + 4 > len(data):
            return None
        body = data[position + 8 : body_end]
        (crc,) = struct.unpack_from(">I", data, body_end)
        if zlib.crc32(body, zlib.crc32(kind)) != crc:
            return None
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
    try:
        # Pillow's PNG decoder ("zip": inflate, then undo each row's filter), fed the image data.
        image = Image.frombytes("L", size, b"".join(idat), "zip", "L")
    except (ValueError, OSError):
        return None  # too little data, or a broken zlib stream
    return np.frombuffer(image.tobytes(), np.uint8).reshape(size[1], size[0])
