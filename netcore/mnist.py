"""Read and check MNIST in the Hugging Face Parquet layout.

The layout of `ylecun/mnist`: a column `image` (struct {bytes: PNG, path}) and a column `label`
(int64).

    rows = validate_parquet(path, expected_rows=10_000)   # cheap: no image decoded
    pixels, labels = read_parquet(path)                    # (n, 28, 28) uint8, (n,) int64

Both refuse, with a DataFileError naming the file (and the row), anything else: a missing or
unreadable file, a wrong schema or row count, a missing label or one outside 0-9, an image that
is not 28x28 8-bit grayscale. `validate_parquet` reads only the images' headers (all PNG headers
at once, netcore.png); `read_parquet` decodes every pixel and so also refuses broken image data.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from netcore.errors import DataFileError
from netcore.png import HEADER_BYTES, read_headers

IMAGE_SIDE = 28
NUM_CLASSES = 10


def read_parquet(
    path: str | Path, expected_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode every row of an MNIST Parquet file; see the module docstring."""
    path = Path(path)
    table = read_table(path, expected_rows)
    labels = check_labels(path, table.column("label"))
    pngs = table.column("image").combine_chunks().field("bytes").to_pylist()
    pixels = np.empty((len(pngs), IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    for row, png in enumerate(pngs):
        pixels[row] = _decode(path, row, png)
    return pixels, labels


def validate_parquet(path: str | Path, expected_rows: int | None = None) -> int:
    """Check an MNIST Parquet file without decoding every image; returns its row count.

    Schema, row count, labels 0-9, and each image's header: 28x28, 8-bit grayscale."""
    path = Path(path)
    table = read_table(path, expected_rows)
    check_labels(path, table.column("label"))
    check_image_headers(path, table.column("image").combine_chunks().field("bytes"))
    return table.num_rows


def read_table(path: str | Path, expected_rows: int | None = None) -> pa.Table:
    """The Parquet file as a table, refused unless it reads, has the MNIST schema and has rows
    (exactly `expected_rows`, when given)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise DataFileError(path, f"cannot read as Parquet ({error})") from None
    check_schema(path, table.schema)
    if table.num_rows == 0:
        raise DataFileError(path, "has no rows")
    if expected_rows is not None and table.num_rows != expected_rows:
        raise DataFileError(path, f"has {table.num_rows} rows, expected {expected_rows}")
    return table


def check_schema(path: str | Path, schema: pa.Schema) -> None:
    """Refuse a table that lacks `image` {bytes, ...} or an integer `label` column."""
    names = set(schema.names)
    if not {"image", "label"} <= names:
        raise DataFileError(path, f"expected columns 'image' and 'label', found {sorted(names)}")
    image_type = schema.field("image").type
    if not pa.types.is_struct(image_type) or image_type.get_field_index("bytes") < 0:
        raise DataFileError(path, f"column 'image' must be a struct with 'bytes', is {image_type}")
    if not pa.types.is_integer(schema.field("label").type):
        raise DataFileError(
            path, f"column 'label' must be integers, is {schema.field('label').type}"
        )


def check_labels(path: str | Path, labels: pa.ChunkedArray) -> np.ndarray:
    """The labels as int64 `(n,)`, refused unless every row has one and it is a digit 0-9."""
    if labels.null_count:
        row = int(np.argmax(labels.is_null().to_numpy(zero_copy_only=False)))
        raise DataFileError(path, f"row {row}: label is missing")
    values = labels.to_numpy().astype(np.int64)
    bad = np.flatnonzero((values < 0) | (values >= NUM_CLASSES))
    if len(bad):
        raise DataFileError(
            path,
            f"row {bad[0]}: label {values[bad[0]]} is not a digit 0-9 "
            "(labels must be integers 0-9)",
        )
    return values


def check_image_headers(path: str | Path, images: pa.Array) -> None:
    """Every image must be a 28x28 8-bit grayscale picture. PNG headers (all of MNIST) are read
    for all rows at once; any other format is opened with Pillow (which reads only the header)."""
    if images.null_count:
        row = images.is_null().to_numpy(zero_copy_only=False).argmax()
        raise DataFileError(path, f"row {row}: image has no bytes")
    offsets = np.frombuffer(images.buffers()[1], dtype=np.int32)[
        images.offset : images.offset + len(images) + 1
    ]
    data = np.frombuffer(images.buffers()[2] or b"", dtype=np.uint8)
    starts, lengths = offsets[:-1].astype(np.int64), np.diff(offsets)
    long_enough = np.flatnonzero(lengths >= HEADER_BYTES)
    first_bytes = np.zeros((len(images), HEADER_BYTES), dtype=np.uint8)
    first_bytes[long_enough] = data[starts[long_enough, None] + np.arange(HEADER_BYTES)]
    headers = read_headers(first_bytes)
    mnist_like = (headers.width == IMAGE_SIDE) & (headers.height == IMAGE_SIDE)
    mnist_like &= (headers.bit_depth == 8) & (headers.colour_type == 0)
    bad_png = np.flatnonzero(headers.is_png & ~mnist_like)
    if len(bad_png):
        row = int(bad_png[0])
        raise DataFileError(
            path,
            f"row {row}: image is a {headers.describe(row)}, expected 28x28 8-bit grayscale",
        )
    for row in np.flatnonzero(~headers.is_png):
        _check_other_image(path, int(row), images[int(row)].as_py())


def _check_other_image(path: str | Path, row: int, encoded: bytes) -> None:
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            mode, size = image.mode, image.size
    except (OSError, SyntaxError, ValueError) as error:
        raise DataFileError(path, f"row {row}: not a readable image ({error})") from None
    if mode != "L" or size != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataFileError(
            path, f"row {row}: image is {mode} {size[0]}x{size[1]}, expected 28x28 grayscale (L)"
        )


def _decode(path: Path, row: int, png: bytes | None) -> np.ndarray:
    if not png:
        raise DataFileError(path, f"row {row}: image has no bytes")
    try:
        with Image.open(io.BytesIO(png)) as image:
            if image.mode != "L" or image.size != (IMAGE_SIDE, IMAGE_SIDE):
                raise DataFileError(
                    path,
                    f"row {row}: image is {image.mode} {image.size[0]}x{image.size[1]}, "
                    f"expected 28x28 grayscale (L)",
                )
            return np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as error:
        raise DataFileError(path, f"row {row}: image does not decode ({error})") from None
