"""netcore.png: the fast path gives exactly Pillow's pixels, alone or many files at once, and
hands every other file back.

Pillow's own decoding of the same bytes (`Image.open`) is the reference throughout.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from netcore.errors import ImageError
from netcore.images import read_gray
from netcore.png import parse_plain_gray, unfilter
from tests.builders import SIGNATURE, chunk, gray_png

LIMITS = {"max_pixels": 50_000_000, "max_side": 2048}


def fast(data: bytes, max_pixels: int = 50_000_000, max_side: int = 2048) -> np.ndarray | None:
    plain = parse_plain_gray(data, max_pixels, max_side)
    return None if plain is None else unfilter([plain])[0]


def pillow_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def saved(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def test_real_mnist_files_match_pillow(small_mnist_dir: Path) -> None:
    """The Hub's own PNG bytes of 500 MNIST test digits (their rows use several filters)."""
    table = pq.read_table(small_mnist_dir / "test-00000-of-00001.parquet", columns=["image"])
    files = table.column("image").combine_chunks().field("bytes").to_pylist()
    together = unfilter([parse_plain_gray(data, **LIMITS) for data in files])
    for data, pixels in zip(files, together, strict=True):
        np.testing.assert_array_equal(pixels, pillow_pixels(data))
        np.testing.assert_array_equal(fast(data), pixels)


@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [0, 1, 2, 3, 4]])
def test_every_row_filter(filters: list[int]) -> None:
    pixels = np.random.default_rng(len(filters) + filters[0]).integers(0, 256, (23, 37), np.uint8)
    data = gray_png(pixels, filters, idat_chunks=3)
    np.testing.assert_array_equal(fast(data), pixels)
    np.testing.assert_array_equal(pillow_pixels(data), pixels)


def test_images_of_mixed_sizes_and_filters_together() -> None:
    """Stacked for one decoder call, each image still sees zeros above its first row, whatever
    the filter of the last row of the image before it."""
    rng = np.random.default_rng(7)
    shapes = [(5, 9), (12, 9), (3, 4), (1, 9), (7, 4), (28, 28)]
    images = [rng.integers(0, 256, shape, np.uint8) for shape in shapes]
    files = [gray_png(image, [(i + k) % 5 for k in range(5)]) for i, image in enumerate(images)]
    decoded = unfilter([parse_plain_gray(data, **LIMITS) for data in files])
    for image, pixels in zip(images, decoded, strict=True):
        np.testing.assert_array_equal(pixels, image)


def _with_idat_byte_flipped(data: bytes) -> bytes:
    at = data.index(b"IDAT") + 6
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def _interlaced(data: bytes) -> bytes:
    width, height = struct.unpack_from(">II", data, 16)
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 1))
    return SIGNATURE + header + data[len(SIGNATURE) + 25 :]


def _with_rows(rows: bytes, width: int = 4, height: int = 3) -> bytes:
    """A plain grayscale PNG header with `rows` (filter bytes included) as its image data."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return SIGNATURE + header + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


DIGIT = np.zeros((28, 28), np.uint8)
DIGIT[6:22, 12:16] = 255
GRAY = saved(Image.fromarray(DIGIT))
OTHER_FILES = {
    "rgb": saved(Image.fromarray(DIGIT).convert("RGB")),
    "palette": saved(Image.fromarray(DIGIT).convert("P")),
    "gray + alpha": saved(Image.fromarray(DIGIT).convert("LA")),
    "16-bit": saved(Image.fromarray(DIGIT.astype(np.uint16) * 257)),
    "transparent gray (tRNS)": saved(Image.fromarray(DIGIT), transparency=0),
    "interlaced": _interlaced(GRAY),
    "corrupted (CRC)": _with_idat_byte_flipped(GRAY),
    "truncated": GRAY[: len(GRAY) // 2],
    "no IEND": GRAY[:-12],
    "JPEG": (lambda b: (Image.fromarray(DIGIT).save(b, "JPEG"), b.getvalue())[1])(io.BytesIO()),
    "random bytes": np.random.default_rng(0).bytes(300),
    "too few rows": _with_rows(bytes(5 * 2)),
    "data inflating past the image (a zlib bomb)": _with_rows(bytes(10_000_000)),
    "unknown row filter": _with_rows(bytes([7, 1, 2, 3, 4]) + bytes(5 * 2)),
}


@pytest.mark.parametrize("kind", OTHER_FILES)
def test_anything_else_goes_the_general_way(kind: str) -> None:
    assert fast(GRAY) is not None  # the file most are made from
    assert fast(_with_rows(bytes(5 * 3))) is not None  # the one the last three are made from
    assert parse_plain_gray(OTHER_FILES[kind], **LIMITS) is None


def test_size_limits_go_the_general_way() -> None:
    assert parse_plain_gray(GRAY, max_pixels=28 * 28 - 1, max_side=2048) is None
    assert parse_plain_gray(GRAY, max_pixels=10_000, max_side=27) is None


@pytest.mark.parametrize("kind", ["truncated", "corrupted (CRC)"])
def test_read_gray_still_words_the_error(tmp_path: Path, kind: str) -> None:
    """A broken grayscale PNG is refused by the general path, with its reason."""
    path = tmp_path / "broken.png"
    path.write_bytes(OTHER_FILES[kind])
    with pytest.raises(ImageError, match=r"broken\.png: (cannot decode|not an image)"):
        read_gray(path)


def test_read_gray_gives_the_same_pixels_either_way(tmp_path: Path) -> None:
    """The fast path (a plain grayscale file) and the general one (the same pixels saved as
    RGB, which Pillow converts) give the same array."""
    (tmp_path / "gray.png").write_bytes(GRAY)
    (tmp_path / "rgb.png").write_bytes(OTHER_FILES["rgb"])
    np.testing.assert_array_equal(read_gray(tmp_path / "gray.png"), DIGIT)
    np.testing.assert_array_equal(read_gray(tmp_path / "rgb.png"), DIGIT)
