"""The batch-prediction table, and the files it is written to (never half-written).

One row per image file:

    path            relative to the input folder ("/"-separated); a name that is not valid UTF-8
                    (a byte such as 0xff, from an old archive) shows each such byte as \\xNN
    label           int64, the predicted digit; null when the file could not be scored
    confidence      float32, the predicted digit's probability; null on error
    prob_0..prob_9  float32 class probabilities; null on error
    error           null, or the one-line reason the file could not be scored
    model_version   the published version that scored it
    model_alias     the alias it was asked for by (production, latest...); null for a version
    path_hex        null; for a name that is not valid UTF-8, its exact bytes as hex digits
                    (bytes.fromhex(path_hex)), since `path` alone could be a valid name too

    table = prediction_table(paths, probabilities, problems, "v3", "production")
    with atomic_writer("out/predictions.csv") as write:   # .parquet, .csv or .jsonl, any case
        write(table)                                       # any number of tables, streamed
    table = read_predictions(Path("out/predictions.csv"))  # any of the three, checked
    listed_names(table)        # each row's file name exactly as the listing gave it (resume)

The writer streams to any location (a local path, s3://...) through store.writing_stream: on a
local disk into a temporary file renamed over the destination when it is complete, on an object
store into an upload completed only then; so the destination holds either nothing, the old
file, or the complete new one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.json
import pyarrow.parquet as pq

from flows.registry.store import is_local, open_location, writing_stream
from netcore.errors import DataFileError

CLASSES = 10
PROBABILITY_COLUMNS = [f"prob_{k}" for k in range(CLASSES)]
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("label", pa.int64()),
        ("confidence", pa.float32()),
        *[(name, pa.float32()) for name in PROBABILITY_COLUMNS],
        ("error", pa.string()),
        ("model_version", pa.string()),
        ("model_alias", pa.string()),
        ("path_hex", pa.string()),
    ]
)
FORMATS = (".parquet", ".csv", ".jsonl")
# The columns Parquet dictionary-encodes: those whose values repeat (a digit, an error reason, the
# version). Not the probabilities or the paths, which hardly ever repeat: trying them too made
# each write 2.5 times as long, for a file a third larger (docs/benchmarks.md, "Batch prediction").
DICTIONARY_COLUMNS = ["label", "error", "model_version", "model_alias", "path_hex"]
# Columns added after the first release: a file written before lacks them (read as nulls).
ADDED_LATER = ("model_alias", "path_hex")


def output_format(path: str | Path) -> str:
    """The format of an output path by its extension: '.parquet', '.csv' or '.jsonl'."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"{path}: unknown output format {suffix or '(no extension)'!r}; "
            f"name the file .parquet, .csv or .jsonl"
        )
    return suffix


def prediction_table(
    paths: Sequence[str],
    probabilities: np.ndarray,
    problems: Sequence[str | None],
    model_version: str,
    model_alias: str | None = None,
) -> pa.Table:
    """Rows for `paths`: probabilities `(n, 10)` where `problems[i]` is None, else an error row.

    `paths` are names as os.scandir gives them: a byte that is not UTF-8 comes as a lone
    surrogate ("\\udcff"), which Arrow's UTF-8 strings cannot hold (issue 12: such a name failed
    its whole shard); it is shown escaped in `path` and kept exactly in `path_hex`."""
    scored = np.array([problem is None for problem in problems], dtype=bool)
    probabilities = np.asarray(probabilities, dtype=np.float32).reshape(len(paths), CLASSES)
    rows = len(paths)
    # The common cases at the cost of one pass (or none): names that are all valid UTF-8, as
    # they are, without hex; no errors.
    if _all_utf8(paths):
        path_column, hex_column = _texts(paths), _repeated(None, rows)
    else:
        path_column = _texts([shown(path) for path in paths])
        hex_column = _texts([_hex_unless_utf8(path) for path in paths])
    if scored.all():
        error_column = _repeated(None, rows)
    else:
        error_column = _texts([None if problem is None else shown(problem) for problem in problems])
    columns = [
        path_column,
        _numbers(probabilities.argmax(axis=1).astype(np.int64), pa.int64(), scored),
        _numbers(probabilities.max(axis=1), pa.float32(), scored),
        *[_numbers(probabilities[:, k], pa.float32(), scored) for k in range(CLASSES)],
        error_column,
        _repeated(model_version, rows),
        _repeated(model_alias, rows),
        hex_column,
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def _all_utf8(texts: Sequence[str]) -> bool:
    """Whether every text encodes as UTF-8 (none holds a lone surrogate)."""
    try:
        "".join(texts).encode()
    except UnicodeEncodeError:
        return False
    return True


# Columns are built from their buffers, not with pa.array: that asks first whether its input is
# a pandas object, importing pandas to find out (much of a small job's scoring;
# docs/benchmarks.md, "Small jobs"). The same holds for reading: see labels().


def _validity(valid: np.ndarray) -> pa.Buffer | None:
    """Arrow's validity bitmap (a bit per row, least significant first), or None: all valid."""
    return None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))


def _numbers(values: np.ndarray, kind: pa.DataType, valid: np.ndarray) -> pa.Array:
    """A numeric column from a 1-d numpy array of the matching type, null where not `valid`."""
    data = pa.py_buffer(np.ascontiguousarray(values))
    return pa.Array.from_buffers(kind, len(values), [_validity(valid), data])


def _texts(texts: Sequence[str | None]) -> pa.Array:
    """A string column, null where an entry is None."""
    encoded = [b"" if text is None else text.encode() for text in texts]
    offsets = np.zeros(len(encoded) + 1, np.int32)
    np.cumsum([len(item) for item in encoded], out=offsets[1:])
    valid = np.array([text is not None for text in texts], dtype=bool)
    buffers = [_validity(valid), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(texts), buffers)


def _repeated(text: str | None, count: int) -> pa.Array:
    """A string column of `count` times the same text (or null)."""
    if text is None:
        return pa.nulls(count, pa.string())
    return pa.repeat(pa.scalar(text, pa.string()), count)


def labels(table: pa.Table) -> np.ndarray:
    """The predicted digits of the scored rows (int64), read from the column's buffers
    (to_numpy, like pa.array, would import pandas)."""
    found = []
    for chunk in table.column("label").chunks:
        validity, data = chunk.buffers()
        values = np.frombuffer(data, np.int64, len(chunk), chunk.offset * 8)
        if validity is not None and chunk.null_count:
            bits = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")
            values = values[bits[chunk.offset : chunk.offset + len(chunk)].astype(bool)]
        found.append(values)
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def shown(text: str) -> str:
    """`text` as valid UTF-8: a byte that is not UTF-8 (a lone surrogate from the file system)
    becomes the four characters \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _hex_unless_utf8(path: str) -> str | None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).hex()
    return None


def listed_names(table: pa.Table) -> list[str]:
    """Each row's file name exactly as the listing gave it (lone surrogates included): what a
    resumed run compares its listing with, and what opens the file again."""
    paths = table.column("path").to_pylist()
    if "path_hex" not in table.column_names:
        return paths
    raw = table.column("path_hex").to_pylist()
    return [
        path if hex_digits is None else os.fsdecode(bytes.fromhex(hex_digits))
        for path, hex_digits in zip(paths, raw, strict=True)
    ]


@contextmanager
def atomic_writer(location: str | Path) -> Iterator[Callable[[pa.Table], None]]:
    """Yield `write(table)`; on a clean exit the file appears at `location` (a local path or
    a URL) complete, at once; on an error nothing appears."""
    suffix = output_format(location)
    fs, path = open_location(location)
    with writing_stream(fs, path) as stream, _table_writer(suffix, stream) as write:
        yield write


@contextmanager
def _table_writer(suffix: str, stream: BinaryIO) -> Iterator[Callable[[pa.Table], None]]:
    if suffix == ".parquet":
        with pq.ParquetWriter(stream, SCHEMA, use_dictionary=DICTIONARY_COLUMNS) as writer:
            yield writer.write_table
    elif suffix == ".csv":
        with pa.csv.CSVWriter(stream, SCHEMA) as writer:
            yield writer.write_table
    else:

        def write_lines(table: pa.Table) -> None:
            lines = "".join(json.dumps(row) + "\n" for row in table.to_pylist())
            stream.write(lines.encode())

        yield write_lines


def read_part(location: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """A Parquet file in the prediction layout (all columns, or `columns`), at a local path or
    a URL.

    Read through ParquetFile, not pq.read_table: that one imports pyarrow.dataset on its first
    call, a large part of a small batch-prediction flow (docs/benchmarks.md)."""
    fs, path = open_location(location)
    if is_local(fs):
        return _read_part(path, columns)
    with fs.open(path, "rb") as stream:
        return _read_part(stream, columns)


def _read_part(source: str | BinaryIO, columns: Sequence[str] | None) -> pa.Table:
    names = list(columns) if columns else SCHEMA.names
    with pq.ParquetFile(source) as part:
        present = set(part.schema_arrow.names)
        table = part.read(columns=[name for name in names if name in present])
    return _in_layout(table, names)


def _in_layout(table: pa.Table, names: Sequence[str]) -> pa.Table:
    """`table`'s columns `names` in SCHEMA's types, ADDED_LATER ones as nulls where missing."""
    for name in names:
        if name not in table.column_names and name in ADDED_LATER:
            table = table.append_column(name, pa.nulls(table.num_rows, SCHEMA.field(name).type))
    return table.select(list(names)).cast(pa.schema([SCHEMA.field(name) for name in names]))


def read_predictions(path: Path) -> pa.Table:
    """A batch-predict output file (.parquet, .csv or .jsonl) as a table of SCHEMA; a
    DataFileError naming the file otherwise."""
    readers = {
        ".parquet": pq.read_table,
        # pyarrow's CSV writer writes a null string as an empty field; text columns are read as
        # text (hex digits or a version name could look like a number).
        ".csv": lambda file: pa.csv.read_csv(
            file,
            convert_options=pa.csv.ConvertOptions(
                column_types={f.name: f.type for f in SCHEMA if f.type == pa.string()},
                strings_can_be_null=True,
            ),
        ),
        ".jsonl": pa.json.read_json,
    }
    if not path.is_file():
        raise DataFileError(path, "predictions file not found")
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataFileError(path, f"unknown format {path.suffix!r}; expected {', '.join(readers)}")
    try:
        # Read as written, then check and cast: a typed read would invent missing columns.
        table = reader(path)
        missing = [
            name
            for name in SCHEMA.names
            if name not in table.column_names and name not in ADDED_LATER
        ]
        if missing:
            raise DataFileError(path, f"not batch-predict output: missing column(s) {missing}")
        return _in_layout(table, SCHEMA.names)
    except (OSError, pa.ArrowException) as error:
        raise DataFileError(path, f"not batch-predict output ({error})") from None
