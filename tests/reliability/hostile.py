"""Hostile image bytes for the reliability suite: files whose headers lie about their size.

    png_declaring(40_000, 40_000)   # a few hundred bytes that claim 1.6 billion RGBA pixels

The header's checksum is right, so a reader that trusts the header (and does not check the size
against a limit before decoding) allocates what it claims.
"""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC over type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(
    width: int, height: int, bit_depth: int = 8, colour_type: int = 6, data: bytes = b"\0" * 64
) -> bytes:
    """A PNG with a valid header declaring `width` x `height` pixels (RGBA 8-bit by default) and
    `data` (compressed) as all of its pixel data."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(data))
        + png_chunk(b"IEND", b"")
    )
