"""What tests build, shared by the test modules (which never import each other):

- PNG files byte by byte, for layouts Pillow does not write: `chunk`, `gray_png` (every row
  filter), `png_declaring` (a valid header that lies about the size: a decompression bomb),
  `png_claiming` (the same for a 1-bit image);
- model registries: `make_payload` (a version's files), `card` (its README), and
  `untrained_registry` (a registry holding v1, an untrained network, with its model.onnx if
  asked).
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np

from flows.paths import ONNX_FILE
from flows.registry.onnx_export import save_onnx, to_onnx
from flows.registry.versions import publish
from netcore.config import NetworkConfig
from netcore.network import Network
from netcore.weights import save_model

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


def png_declaring(
    width: int, height: int, bit_depth: int = 8, colour_type: int = 6, data: bytes = b"\0" * 64
) -> bytes:
    """A PNG with a valid header declaring `width` x `height` pixels (RGBA 8-bit by default) and
    `data` (compressed) as all of its pixel data: a few hundred bytes that would decode into
    gigabytes, if a reader trusted the header without checking the size against a limit."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        SIGNATURE
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(data))
        + chunk(b"IEND", b"")
    )


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header for a 1-bit width x height image, with a few rows of data: a few
    hundred bytes that would decode into `width * height` bytes of memory."""
    rows = b"\x00" * (1 + (width + 7) // 8) * 50
    return png_declaring(width, height, bit_depth=1, colour_type=0, data=rows)


def make_payload(folder: Path, seed: int = 0, accuracy: float = 0.9) -> Path:
    """A version's version-independent files: weights, config, metrics and one figure."""
    network = Network(NetworkConfig(layer_sizes=[784, 16, 10]), np.random.default_rng(seed))
    save_model(network, folder)
    (folder / "metrics.json").write_text(json.dumps({"test_accuracy": accuracy}))
    (folder / "figures").mkdir()
    (folder / "figures" / "curve.png").write_bytes(b"not really a png")
    return folder


def card(version: str) -> dict[str, str]:
    """The version-dependent files of a version: its README."""
    return {"README.md": f"# model {version}\n"}


def untrained_registry(
    root: Path, config: NetworkConfig | None = None, with_onnx: bool = False
) -> str:
    """A model registry under `root` holding v1: an untrained network of `config` (the MLP
    default if None; labels need not be right in these tests, only identical for identical
    inputs), with its model.onnx as publishing writes it when `with_onnx`."""
    network = Network(config or NetworkConfig(), np.random.default_rng(0))
    save_model(network, root / "payload")
    if with_onnx:
        save_onnx(to_onnx(network), root / "payload" / ONNX_FILE)
    publish(str(root / "models"), root / "payload", lambda version: {}, {})
    return str(root / "models")
