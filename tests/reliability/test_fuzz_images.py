"""Image preprocessing fuzzed with hypothesis: random bytes, real images of every format and mode
with their bytes mutated, and PNG headers that lie about their size.

The contract (netcore/images.py): `read_gray` returns a grayscale array or raises ImageError,
nothing else; `load_digits` (what batch prediction calls) never raises, giving a one-line reason
per bad file; and no file makes memory grow beyond what the pixel limit allows. Memory is the
process's peak RSS (VmHWM, reset before each example through /proc/self/clear_refs), so Pillow's
own C allocations count too, not only what tracemalloc sees.

Examples per test: 3,000 (mutated images) and 1,500 (each of the others) with CI=true, a tenth of
that otherwise; FUZZ_SCALE=N multiplies them. Add --hypothesis-show-statistics to see the counts.
"""

from __future__ import annotations

import ctypes
import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from netcore.errors import ImageError
from netcore.images import WORK_SIDE, load_digits, read_gray
from tests.builders import png_declaring

# Small, so the fuzzed headers reach it often; the bound scales with it.
MAX_PIXELS = 1 << 20
# The worst measured is ~31 bytes per pixel (a noise RGBA PNG at the limit: the decoded image,
# its grayscale and the float work arrays); the bound leaves half as much again.
BYTES_PER_PIXEL = 48
SLACK = 16 << 20  # the interpreter's own allocations while an example runs
MEMORY_BOUND = BYTES_PER_PIXEL * MAX_PIXELS + SLACK
_LIBC = ctypes.CDLL("libc.so.6")

CI = os.environ.get("CI") == "true"
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
settings.register_profile(
    "fuzz", deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def fuzz(ci_examples: int) -> settings:
    """Hypothesis settings: `ci_examples` examples under CI=true, a tenth locally, x FUZZ_SCALE."""
    examples = ci_examples if CI else ci_examples // 10
    return settings(settings.get_profile("fuzz"), max_examples=max(1, int(examples * SCALE)))


# Modes Pillow can write in each format: every decoder and conversion path of read_gray.
WRITABLE = {
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "BMP": ["1", "L", "P", "RGB"],
    "GIF": ["L", "P"],
    "TIFF": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I", "F", "CMYK"],
    "WEBP": ["RGB", "RGBA"],
}
MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF89a", b"II*\0", b"MM\0*", b"RIFF"]
# Integers written over header bytes: zero, one, and the largest 16- and 32-bit values.
EXTREMES = [0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]


def peak_growth(action) -> int:
    """Bytes by which the process's peak RSS rose above its RSS while `action()` ran.

    Memory freed earlier in the session but still resident (Pillow's cached blocks, glibc's
    free heap pages) would be reused without raising the peak, hiding an allocation: it is
    handed back to the system first, so every page `action` allocates is counted."""
    Image.core.clear_cache()
    _LIBC.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status("VmRSS")
    action()
    return _status("VmHWM") - before


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/self/status")


def check(data: bytes) -> None:
    """The preprocessing contract for one file's bytes."""

    def run() -> None:
        try:
            gray = read_gray(io.BytesIO(data), "fuzzed.img", MAX_PIXELS)
        except ImageError as error:
            assert error.path == "fuzzed.img" and "\n" not in error.problem, error
        else:
            assert gray.ndim == 2 and 0 < gray.size <= MAX_PIXELS, gray.shape
            assert max(gray.shape) <= WORK_SIDE and gray.dtype in (np.uint8, np.float32)
        pixels, (problem,) = load_digits(["fuzzed.img"], lambda _: io.BytesIO(data), MAX_PIXELS)
        assert pixels.shape == (1, 28, 28) and pixels.dtype == np.uint8
        assert problem is None or (problem and "\n" not in problem), problem

    growth = peak_growth(run)
    assert growth <= MEMORY_BOUND, f"peak RSS grew {growth / 2**20:.0f} MiB on {len(data)} bytes"


@st.composite
def images(draw: st.DrawFn) -> bytes:
    """A real image file: any writable format and mode, 1-64 px a side, noise, a flat colour or
    a bright rectangle on a dark or light ground (which exercises cropping and centring)."""
    image_format = draw(st.sampled_from(sorted(WRITABLE)))
    mode = draw(st.sampled_from(WRITABLE[image_format]))
    size = (draw(st.integers(1, 64)), draw(st.integers(1, 64)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    raw_length = len(Image.new(mode, size).tobytes())
    kind = draw(st.sampled_from(["noise", "flat", "rectangle"]))
    if kind == "noise":
        raw = rng.integers(0, 256, raw_length, np.uint8).tobytes()
    else:
        ground = draw(st.sampled_from([0, 255]))
        buffer = np.full(raw_length, ground, np.uint8)
        if kind == "rectangle":
            start, stop = sorted(rng.integers(0, raw_length + 1, 2))
            buffer[start:stop] = 255 - ground
        raw = buffer.tobytes()
    image = Image.frombytes(mode, size, raw)
    out = io.BytesIO()
    image.save(out, image_format)
    return out.getvalue()


@st.composite
def mutated(draw: st.DrawFn, files: st.SearchStrategy[bytes]) -> bytes:
    """`files` with up to 4 mutations: a byte changed, bytes inserted or deleted, a header
    integer overwritten with an extreme value, or the file cut short (mostly near the start,
    where the headers are)."""
    data = bytearray(draw(files))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        limit = len(data) - 1
        at = draw(st.one_of(st.integers(0, min(64, limit)), st.integers(0, limit)))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "extreme", "truncate"]))
        if operation == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif operation == "delete":
            del data[at : at + draw(st.integers(1, 32))]
        elif operation == "extreme":
            width = draw(st.sampled_from([2, 4]))
            value = draw(st.sampled_from(EXTREMES)) & (256**width - 1)
            order = draw(st.sampled_from(["big", "little"]))
            data[at : at + width] = value.to_bytes(width, order)
        else:
            del data[at:]
    return bytes(data)


@st.composite
def lying_pngs(draw: st.DrawFn) -> bytes:
    """A PNG with a valid header declaring any size (up to 2^31 - 1 a side, the format's
    maximum), any bit depth and colour type, and too little or random pixel data."""
    side = st.one_of(st.integers(1, 4096), st.integers(1, 2**31 - 1))
    return png_declaring(
        draw(side),
        draw(side),
        bit_depth=draw(st.sampled_from([1, 2, 4, 8, 16])),
        colour_type=draw(st.sampled_from([0, 2, 3, 4, 6])),
        data=draw(st.binary(max_size=256)),
    )


pytestmark = [
    pytest.mark.skipif(
        not Path("/proc/self/clear_refs").exists(), reason="peak RSS is measured through /proc"
    ),
    # Pillow warns about the corrupt EXIF and TIFF tags it skips, and about headers declaring
    # more than its own limit (read_gray refuses those itself): expected here, by the thousand.
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]


def test_the_memory_probe_sees_pillow_allocations() -> None:
    """The probe counts C allocations (a 5,000 x 5,000 RGBA image: 100 MB) that tracemalloc
    would miss, and they exceed the bound: a decoded bomb would fail the fuzz tests."""
    assert peak_growth(lambda: Image.new("RGBA", (5000, 5000), (1, 2, 3, 4))) > MEMORY_BOUND


@fuzz(1500)
@given(st.one_of(st.binary(max_size=2048), st.tuples(st.sampled_from(MAGIC), st.binary())))
def test_random_bytes(data: bytes | tuple[bytes, bytes]) -> None:
    """Random bytes, alone or after a real format's magic number (so a decoder starts)."""
    check(b"".join(data) if isinstance(data, tuple) else data)


@fuzz(3000)
@given(mutated(images()))
def test_mutated_images(data: bytes) -> None:
    check(data)


@fuzz(1500)
@given(mutated(lying_pngs()))
def test_lying_headers(data: bytes) -> None:
    check(data)


@pytest.mark.parametrize("image_format", sorted(WRITABLE))
def test_the_limit_is_exact(image_format: str) -> None:
    """An image of exactly MAX_PIXELS decodes; one pixel more is refused before decoding."""
    for side, refused in (((1024, 1024), False), ((1024, 1025), True)):
        mode = "RGB" if image_format in ("JPEG", "WEBP") else "L"
        data = io.BytesIO()
        Image.new(mode, side, 255).save(data, image_format)
        size = side[0] * side[1]
        assert (size > MAX_PIXELS) == refused
        if refused:
            with pytest.raises(ImageError, match="over the per-image limit"):
                read_gray(io.BytesIO(data.getvalue()), "big", MAX_PIXELS)
        else:
            assert read_gray(io.BytesIO(data.getvalue()), "big", MAX_PIXELS).size == size
