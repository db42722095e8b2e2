"""Read MNIST from the Hugging Face Parquet layout into uint8 arrays.

The layout of `ylecun/mnist`: a column `image` (struct {bytes: PNG, path}) and a column `label`
(int64). `read_parquet(path)` returns pixels `(n, 28, 28)` uint8 and labels `(n,)` int64, and
refuses, with a DataFileError naming the file, anything else: a missing or unreadable file, a wrong
schema, labels outside 0-9, or images that do not decode to 28x28 grayscale.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from netcore.errors import DataFileError

IMAGE_SIDE = 28
NUM_CLASSES = 10


def read_parquet(
    path: str | Path, expected_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode every row of an MNIST Parquet file; see the module docstring."""
    path = Path(path)
    table = read_table(path, expected_rows)

    labels = table.column("label").to_numpy(zero_copy_only=False)
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        bad = (
            labels[(labels < 0) | (labels >= NUM_CLASSES)] if labels.dtype.kind in "iu" else labels
        )
        raise DataFileError(path, f"labels must be integers 0-9, found e.g. {bad[:3].tolist()}")

    pngs = table.column("image").combine_chunks().field("bytes").to_pylist()
    pixels = np.empty((len(pngs), IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    for row, png in enumerate(pngs):
        pixels[row] = _decode(path, row, png)
    return pixels, labels.astype(np.int64)


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
