"""The download stage's logic: MNIST from a source into data/raw/mnist/{train,test}.parquet.

A source is a Hugging Face Hub dataset id (`ylecun/mnist`, optionally at a revision), a local
folder, or an fsspec URL (`s3://bucket/mnist`, `memory://...`) holding Parquet files in the Hub's
layout (`train-*.parquet` / `test-*.parquet`, or `train.parquet` / `test.parquet`). Hugging Face
`datasets` loads it either way; the splits are written as Parquet, then validated (schema, row
counts, labels 0-9, 28x28 grayscale images: netcore.mnist.validate_parquet) and hashed.

    result = download("ylecun/mnist", None, Path("data/raw/mnist"))
    result["files"]["train"] == {"path": ..., "sha256": ..., "rows": 60000}

An unreachable Hub fails in a few seconds (a quick probe, instead of the Hub client's retries,
which last tens of seconds: docs/benchmarks.md) with a message that says how to point at a local
copy.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from netcore.errors import DataFileError, NetcoreError
from netcore.io import sha256_file, write_atomic
from netcore.mnist import check_schema, validate_parquet

# Where MNIST comes from unless --source or DIGITFLOW_MNIST_SOURCE says otherwise.
DEFAULT_SOURCE = "ylecun/mnist"
SPLITS = ("train", "test")
FULL_MNIST_ROWS = {"train": 60_000, "test": 10_000}
HUB_PROBE_SECONDS = 3.0
LOCAL_COPY_HINT = (
    "point digitflow at a local copy of the Parquet files with --source /path/to/mnist or "
    "DIGITFLOW_MNIST_SOURCE=/path/to/mnist (or set HF_HUB_OFFLINE=1 to use the Hugging Face cache)"
)


class DownloadError(NetcoreError):
    """The source cannot be reached or read."""


def mnist_source() -> str:
    """$DIGITFLOW_MNIST_SOURCE, or the Hugging Face Hub dataset ylecun/mnist."""
    return os.environ.get("DIGITFLOW_MNIST_SOURCE") or DEFAULT_SOURCE


def source_kind(source: str) -> str:
    """'local' (a folder here, or file://), 'url' (any other fsspec URL) or 'hub' (a dataset id)."""
    if source.startswith("file://"):
        return "local"
    if "://" in source:
        return "url"
    if Path(source).expanduser().exists() or source.startswith(("/", ".", "~")):
        return "local"
    return "hub"


def split_files(source: str) -> dict[str, list[str]]:
    """The Parquet files of each split in a folder or fsspec URL, as URLs datasets can open."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(source if "://" in source else str(Path(source).expanduser()))
    if not fs.isdir(root):
        raise DownloadError(f"{source}: no such folder (the MNIST source must hold Parquet files)")
    local = source_kind(source) == "local"
    found = {}
    for split in SPLITS:
        patterns = (f"{split}-*.parquet", f"{split}.parquet", f"*/{split}-*.parquet")
        matches = next((m for p in patterns if (m := sorted(fs.glob(f"{root}/{p}")))), [])
        if not matches:
            raise DownloadError(
                f"{source}: no Parquet files for the {split!r} split "
                f"(looked for {', '.join(patterns)})"
            )
        found[split] = [m if local else fs.unstrip_protocol(m) for m in matches]
    return found


def source_fingerprint(source: str, revision: str | None) -> str:
    """What identifies the data behind `source`: the files' sha256 for a local folder, their
    fsspec keys (ETags on object stores) for a URL, the id and revision for the Hub."""
    kind = source_kind(source)
    if kind == "hub":
        return f"hub:{source}@{revision or 'main'}"
    import fsspec

    digest = hashlib.sha256()
    for split, paths in split_files(source).items():
        for path in paths:
            fs, inner = fsspec.core.url_to_fs(path)
            key = sha256_file(inner) if kind == "local" else fs.ukey(inner)
            digest.update(f"{split}:{Path(inner).name}:{key}\n".encode())
    return f"{kind}:{digest.hexdigest()}"


def check_hub_reachable(source: str, timeout: float = HUB_PROBE_SECONDS) -> None:
    """Fail fast, with a hint, when the Hub cannot be reached (skipped in HF offline mode, where
    datasets reads the local Hugging Face cache instead)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(f"{endpoint}/api/datasets/{source}", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # the Hub answered (a private or missing dataset is datasets' error to report)
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"cannot reach the Hugging Face Hub at {endpoint} to download {source} ({reason}); "
            f"{LOCAL_COPY_HINT}"
        ) from None


def check_source_files(files: dict[str, list[str]]) -> None:
    """Read each Parquet file of a folder or URL source and check its columns, so that a damaged
    or wrong file is refused in one line naming it (datasets reports a truncated or corrupt file
    in many lines, or as "An error occurred while generating the dataset", without the file)."""
    import fsspec

    for paths in files.values():
        for path in paths:
            try:
                with fsspec.open(path, "rb") as f:
                    schema = pq.read_table(f).schema
            except (OSError, pa.ArrowException) as error:
                raise DataFileError(path, f"cannot read as Parquet ({error})") from None
            check_schema(path, schema)


def load_splits(source: str, revision: str | None) -> Any:
    """The source as a datasets.DatasetDict with 'train' and 'test' splits."""
    kind = source_kind(source)
    if kind != "hub" and revision:
        raise DownloadError(f"--revision only applies to Hub datasets, not to {source}")
    if kind == "hub":
        check_hub_reachable(source)
    else:
        files = split_files(source)
        check_source_files(files)
    import datasets

    try:
        if kind == "hub":
            splits = datasets.load_dataset(source, revision=revision)
        else:
            splits = datasets.load_dataset("parquet", data_files=files)
    except DownloadError:
        raise
    except Exception as error:  # datasets raises many types; each becomes one clear line
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        hint = f"; {LOCAL_COPY_HINT}" if kind == "hub" else ""
        raise DownloadError(f"cannot load {source} with datasets ({first_line}){hint}") from None
    missing = [split for split in SPLITS if split not in splits]
    if missing:
        raise DownloadError(f"{source}: no {' or '.join(missing)} split (found {list(splits)})")
    return splits


def download(
    source: str,
    revision: str | None,
    raw_dir: str | Path,
    expected_rows: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Load `source`, write raw_dir/{train,test}.parquet, validate and hash them.

    `expected_rows` maps a split to its row count (0 or absent: any count)."""
    splits = load_splits(source, revision)
    files = {}
    for split in SPLITS:
        path = write_atomic(Path(raw_dir) / f"{split}.parquet", splits[split].to_parquet)
        rows = validate_parquet(path, (expected_rows or {}).get(split) or None)
        files[split] = {"path": str(path), "sha256": sha256_file(path), "rows": rows}
    return {"source": source, "revision": revision, "files": files}
