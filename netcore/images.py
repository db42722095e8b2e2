"""Arbitrary digit images -> MNIST-style 28x28 pixels: the one path every caller uses.

    pixels, problems = load_digits(["scan.jpg", "three.png"])   # (n, 28, 28) uint8, [None | str]
    x = normalize(pixels, network.config)                       # netcore.preprocess, as in training

Two steps, the second being how MNIST itself was prepared (LeCun et al.):

1. `read_gray` decodes one file (PNG, JPEG, BMP, GIF, TIFF, WebP) to grayscale in [0, 1]. The
   size is checked from the header BEFORE decoding, so a decompression bomb (a few KB declaring
   40000x40000 pixels) is refused, not decoded; palette, 16-bit and 32-bit images are scaled to
   their real range (Pillow's own 16-bit -> 8-bit conversion clips); a transparent background
   becomes background, never ink; huge images are reduced to at most WORK_SIDE pixels a side.
   Plain 8-bit grayscale PNG files (MNIST-like crops) take a fast path (netcore.png) that gives
   the same pixels for a fraction of the CPU, decoding many files at once in `load_digits`.
2. `mnist_style` finds the background (the densest half of the pixel values), puts ink bright
   on dark (black-on-white paper, scans and Paint drawings are inverted), removes the background
   level and its noise, stretches the ink to full contrast, crops to the ink's bounding box,
   scales that to fit 20x20 keeping the aspect ratio and pastes it into 28x28 with its centre of
   mass at the centre. A real MNIST digit (already 20 px on its long side and centred) comes back
   unchanged, pixel for pixel (apart from the stretch, 254 -> 255, in a tenth of them).

Every problem with a file raises ImageError (naming it) or, in the batch functions, becomes a
one-line reason instead of pixels. Run `python -m netcore.images FILE...` to see the 28x28 result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from netcore.errors import ImageError
from netcore.png import PlainGray, parse_plain_gray, unfilter

# File names scored as images (compared lower-case); everything else is skipped.
EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# The Pillow decoders allowed to run: only these, whatever the bytes claim to be (the JPEG one
# also opens the MPO files of many phones; DIB is a BMP variant).
FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "TIFF", "WEBP")
# Pixels (width x height, from the header) above which an image is refused without decoding.
# 50 MP is above ordinary phone photos; decoding one costs at most 4 bytes a pixel.
DEFAULT_MAX_PIXELS = 50_000_000
# Larger images are reduced to this many pixels on their long side before any float work: the
# digit ends up 20 px tall anyway, and this bounds the memory of everything after decoding.
WORK_SIDE = 2048
# The MNIST frame: the digit's box, the image side and where its centre of mass goes.
BOX, SIDE, CENTRE = 20, 28, 14
# An image whose brightest ink is less than this far from the background is blank.
MIN_CONTRAST = 0.1
# Pixels less than this many background spreads above the background level are noise.
NOISE_MARGIN = 3.0
# Files up to this size are read whole first, for the fast path of plain grayscale PNG (a
# 256x256 digit is well under it). Not more: asking for 1 MB costs a 1 MB allocation per file,
# five times the cost of the whole read of a 300-byte file (docs/benchmarks.md, "Numbers behind
# the code").
SMALL_FILE_BYTES = 1 << 16
# Small images are normalized together, this many pixels at a time (vectorized per size).
BATCH_PIXELS = 1 << 22

ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
ROTATED_FORMATS = frozenset({"JPEG", "MPO", "WEBP", "TIFF"})


def is_image_name(name: str) -> bool:
    """Whether a file name (or "/"-separated path) has one of the image EXTENSIONS,
    case-insensitive, as os.path.splitext finds extensions: the leading dots of a name start
    none (".png" is a hidden file without one). Written out rather than calling splitext: a
    folder listing asks this of every file, and splitext costs several times more."""
    stem, dot, extension = name.rpartition("/")[2].rpartition(".")
    return bool(dot and stem.strip(".")) and f".{extension.lower()}" in EXTENSIONS


def read_gray(
    file: str | Path | BinaryIO, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode one image to grayscale `(h, w)`: uint8 (0-255) for plain 8-bit images, otherwise
    float32 in [0, 1]. Raises ImageError naming the file (`name`, or the path) on any problem."""
    gray = _read(file, name, max_pixels)
    return unfilter([gray])[0] if isinstance(gray, PlainGray) else gray


def _read(file: str | Path | BinaryIO, name: str | None, max_pixels: int) -> np.ndarray | PlainGray:
    """`read_gray`, except that a plain grayscale PNG comes back parsed, its rows still filtered
    (netcore.png): `load_digits` unfilters many at once."""
    if not 1 <= max_pixels <= Image.MAX_IMAGE_PIXELS:
        raise ValueError(f"max_pixels must be 1..{Image.MAX_IMAGE_PIXELS:,}, got {max_pixels}")
    name = name or str(file)
    if isinstance(file, str | Path):
        with _opened(_open_binary, str(file)) as stream:
            return _read(stream, name, max_pixels)
    try:
        head = file.read(SMALL_FILE_BYTES + 1)
        if head == b"":
            raise ImageError(name, "empty file")
        if len(head) <= SMALL_FILE_BYTES:
            plain = parse_plain_gray(head, max_pixels, WORK_SIDE)
            if plain is not None:
                return plain
        file.seek(0)
        with Image.open(file, formats=FORMATS) as image:
            _check_size(image, name, max_pixels)
            return _gray(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(name, f"too large, refused without decoding ({error})") from None
    except UnidentifiedImageError:
        raise ImageError(name, f"not an image ({', '.join(FORMATS)})") from None
    except Exception as error:  # Pillow raises many types on hostile bytes; each is one row
        reason = str(error) or type(error).__name__
        raise ImageError(name, f"cannot decode ({reason})") from None


def _check_size(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(name, f"image is {width}x{height}: no pixels")
    if width * height > max_pixels:
        raise ImageError(
            name,
            f"image is {width}x{height} = {width * height:,} pixels, over the per-image limit "
            f"of {max_pixels:,} (refused without decoding: a decompression bomb?)",
        )


def _gray(image: Image.Image) -> np.ndarray:
    longest = max(image.size)
    if longest > WORK_SIDE and image.format in ("JPEG", "MPO"):
        # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: no full-size pixels at all.
        image.draft("L", (image.width * WORK_SIDE // longest, image.height * WORK_SIDE // longest))
    if image.format in ROTATED_FORMATS and image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)  # phone photos are stored sideways + a tag

    sixteen_bit = image.mode.startswith("I;16")
    if sixteen_bit:
        image = image.convert("I")
    elif image.mode in ALPHA_MODES or "transparency" in image.info:
        image = image.convert("LA")
    elif image.mode not in ("L", "I", "F"):
        image = image.convert("L")
    longest = max(image.size)
    if longest > WORK_SIDE:
        image = image.reduce(math.ceil(longest / WORK_SIDE))

    width, height = image.size
    if image.mode == "L":
        return np.frombuffer(image.tobytes(), np.uint8).reshape(height, width)
    if image.mode == "LA":
        return _composite(np.frombuffer(image.tobytes(), np.uint8).reshape(height, width, 2))
    values = np.asarray(image, dtype=np.float32)
    if sixteen_bit:
        return values / np.float32(65535)
    # 32-bit integer or float images have no fixed white level: use their own range.
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _composite(gray_alpha: np.ndarray) -> np.ndarray:
    """Gray + alpha -> gray, with every transparent pixel set to the background.

    The background is the opposite of the visible (opaque) content: dark strokes on a transparent
    canvas are put on white, light strokes on black, so transparency never reads as ink."""
    gray = gray_alpha[..., 0].astype(np.float32) / 255
    if gray_alpha[..., 1].min() == 255:
        return gray
    alpha = gray_alpha[..., 1].astype(np.float32) / 255
    weight = alpha.sum()
    dark_ink = weight > 0 and (gray * alpha).sum() < 0.5 * weight
    background = np.float32(1.0 if dark_ink else 0.0)
    return gray * alpha + background * (1 - alpha)


def mnist_style(grays: Sequence[np.ndarray]) -> tuple[np.ndarray, list[str | None]]:
    """Grayscale images (from `read_gray`) -> `(n, 28, 28)` uint8 MNIST-style pixels, and for
    each image None or the reason it has no digit (then its pixels are zero).

    Images of the same size and dtype are processed together, vectorized; the result for an image
    does not depend on what else is in the batch."""
    pixels = np.zeros((len(grays), SIDE, SIDE), np.uint8)
    problems: list[str | None] = [None] * len(grays)
    groups: dict[tuple, list[int]] = {}
    for index, gray in enumerate(grays):
        groups.setdefault((gray.shape, gray.dtype.str), []).append(index)
    for members in groups.values():
        result, blank = _mnist_stack(np.stack([grays[i] for i in members]))
        pixels[members] = result
        for i in np.asarray(members)[blank]:
            problems[i] = f"no digit found: the image is blank (contrast under {MIN_CONTRAST:.0%})"
    return pixels, problems


def _mnist_stack(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, h, w) uint8, or float32 in [0, 1] -> ((n, 28, 28) uint8, blank (n,) bool)."""
    n, h, w = stack.shape
    ink, blank = _ink(stack)
    row_mass, col_mass = _masses(ink)
    rows, cols = row_mass > 0, col_mass > 0
    top, left = rows.argmax(axis=1), cols.argmax(axis=1)
    height = h - rows[:, ::-1].argmax(axis=1) - top
    width = w - cols[:, ::-1].argmax(axis=1) - left

    pixels = np.zeros((n, SIDE, SIDE), np.uint8)
    # A box already 20 long needs no resampling: centre the image as it is (MNIST's own case).
    fits = (np.maximum(height, width) == BOX) & ~blank
    if fits.all():
        return _centred(ink, row_mass, col_mass), blank
    pixels[fits] = _centred(ink[fits], row_mass[fits], col_mass[fits])
    for i in np.flatnonzero(~fits & ~blank):
        box = _fit_box(ink[i, top[i] : top[i] + height[i], left[i] : left[i] + width[i]])[None]
        pixels[i] = _centred(box, *_masses(box))[0]
    return pixels, blank


def _ink(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ink bright on dark, background removed, stretched to full contrast: `(n, h, w)` uint8, and
    which images are blank (their ink is all zero)."""
    n = len(stack)
    flat = stack.reshape(n, -1)
    clean = np.zeros(n, bool)
    if stack.dtype == np.uint8:
        # MNIST's own case, told without sorting: over half the pixels black (so the background
        # is 0, with no spread) and ink reaching 255. Such an image is its own ink, exactly as
        # the general computation below would find.
        black = np.count_nonzero(flat == 0, axis=1)
        clean = (black > flat.shape[1] // 2) & (flat.max(axis=1) == 255)
    if clean.all():
        return stack, np.zeros(n, bool)
    ink = np.zeros(flat.shape, np.uint8)
    ink[clean] = flat[clean]
    blank = np.zeros(n, bool)
    ink[~clean], blank[~clean] = _stretched(flat[~clean])
    return ink.reshape(stack.shape), blank


def _stretched(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_ink` for `(n, pixels)` uint8, or float32 in [0, 1]: the general case."""
    n = len(flat)
    x = np.multiply(flat, np.float32(1 / 255), dtype=np.float32) if flat.dtype == np.uint8 else flat
    values = np.sort(x, axis=1)
    # The background is where the pixels are densest: the middle of the shortest interval of
    # values holding half of them. Unlike the median, this holds when ink covers much of a tight
    # crop (anti-aliased ink spreads over many levels, the background is one level or one noise
    # peak), up to about 60% of it; beyond that, which is ink is ambiguous.
    m = values.shape[1]
    half = m // 2
    start = (values[:, half:] - values[:, : m - half]).argmin(axis=1)
    rows = np.arange(n)
    level = values[rows, start + half // 2]
    # Dark ink on light paper (scans, photos, Paint) is inverted: ink bright on dark, as MNIST.
    invert = level > 0.5
    # With ink made bright: the background level; its spread, down to the 10th percentile on the
    # far side from the ink (all background there: noise, not ink); the brightest ink.
    background = np.where(invert, 1 - level, level)
    tail = values[:, [(m - 1) // 10, (m - 1) * 9 // 10]]
    spread = np.where(invert, tail[:, 1] - level, level - tail[:, 0])
    brightest = np.where(invert, 1 - values[:, 0], values[:, -1])
    floor = background + NOISE_MARGIN * spread
    blank = (brightest - background < MIN_CONTRAST) | (brightest <= floor)
    gain = 1 / np.where(blank, 1, brightest - floor)

    x = np.where(invert[:, None], 1 - x, x) - floor[:, None].astype(np.float32)
    x *= gain[:, None].astype(np.float32)
    return np.where(blank[:, None], np.uint8(0), _to_uint8(x)), blank


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8)


def _masses(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums of each image's rows `(n, h)` and columns `(n, w)`."""
    return stack.sum(axis=2, dtype=np.float32), stack.sum(axis=1, dtype=np.float32)


def _centred(stack: np.ndarray, row_mass: np.ndarray, col_mass: np.ndarray) -> np.ndarray:
    """Paste each image of `(n, h, w)` uint8 (with its row and column sums) into 28x28, moved by
    the whole number of pixels that puts its centre of mass nearest the centre (as MNIST); what
    falls outside the frame is cut."""
    n, h, w = stack.shape
    mass = np.maximum(row_mass.sum(axis=1), 1)
    com_rows = row_mass @ np.arange(h, dtype=np.float32) / mass
    com_cols = col_mass @ np.arange(w, dtype=np.float32) / mass
    shift_rows = np.rint(CENTRE - com_rows).astype(np.int64)
    shift_cols = np.rint(CENTRE - com_cols).astype(np.int64)
    framed = np.zeros((n, SIDE, SIDE), np.uint8)
    # Images with the same shift are copied together: a few slices instead of a gather.
    key = shift_rows * (2 * (w + SIDE)) + shift_cols
    order = np.argsort(key, kind="stable")
    _, starts = np.unique(key[order], return_index=True)
    for members in np.split(order, starts[1:]) if n else []:
        dy, dx = int(shift_rows[members[0]]), int(shift_cols[members[0]])
        r0, r1, c0, c1 = max(0, dy), min(SIDE, h + dy), max(0, dx), min(SIDE, w + dx)
        if r0 < r1 and c0 < c1:
            framed[members, r0:r1, c0:c1] = stack[members, r0 - dy : r1 - dy, c0 - dx : c1 - dx]
    return framed


def _fit_box(crop: np.ndarray) -> np.ndarray:
    """Scale a uint8 crop so its long side is 20 (aspect kept), top-left in a 20x20 canvas."""
    h, w = crop.shape
    factor = BOX / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    # Bilinear on floats: area-weighted (antialiased) when shrinking, smooth when enlarging.
    values = Image.fromarray(crop.astype(np.float32) / 255)
    canvas = np.zeros((BOX, BOX), np.uint8)
    canvas[: size[1], : size[0]] = _to_uint8(np.asarray(values.resize(size, Image.BILINEAR)))
    return canvas


def load_digits(
    names: Sequence[str],
    open_file: Callable[[str], BinaryIO] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, list[str | None]]:
    """Read and normalize many files: `(n, 28, 28)` uint8 pixels and, per file, None or the
    reason it could not be used (its pixels are then zero). Never raises for a bad file.

    `open_file(name)` opens a file for reading (default: `open(name, "rb")`)."""
    opener = open_file or _open_binary
    pixels = np.zeros((len(names), SIDE, SIDE), np.uint8)
    problems: list[str | None] = [None] * len(names)
    pending: list[int] = []
    grays: list[np.ndarray | PlainGray] = []
    budget = 0
    for index, name in enumerate(names):
        try:
            with _opened(opener, name) as stream:
                gray = _read(stream, name, max_pixels)
        except ImageError as error:
            problems[index] = error.problem
            continue
        pending.append(index)
        grays.append(gray)
        budget += gray.size
        if budget >= BATCH_PIXELS:
            _flush(pending, grays, pixels, problems)
            budget = 0
    _flush(pending, grays, pixels, problems)
    return pixels, problems


def _open_binary(name: str) -> BinaryIO:
    return open(name, "rb")


def _opened(opener: Callable[[str], BinaryIO], name: str) -> BinaryIO:
    try:
        return opener(name)
    except OSError as error:
        raise ImageError(name, f"cannot open ({error.strerror or error})") from None


def _flush(pending: list[int], grays: list[np.ndarray | PlainGray], pixels, problems) -> None:
    if not pending:
        return
    plain = [i for i, gray in enumerate(grays) if isinstance(gray, PlainGray)]
    for i, gray in zip(plain, unfilter([grays[i] for i in plain]), strict=True):
        grays[i] = gray
    batch_pixels, batch_problems = mnist_style(grays)
    pixels[pending] = batch_pixels
    for index, problem in zip(pending, batch_problems, strict=True):
        problems[index] = problem
    pending.clear()
    grays.clear()


def load_digit(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """One file -> `(28, 28)` uint8 MNIST-style pixels; raises ImageError naming the file."""
    pixels, (problem,) = mnist_style([read_gray(path, str(path), max_pixels)])
    if problem:
        raise ImageError(path, problem)
    return pixels[0]


if __name__ == "__main__":
    import sys

    for argument in sys.argv[1:]:
        try:
            digit = load_digit(argument)
        except ImageError as error:
            print(error)
            continue
        print(argument)
        print("\n".join("".join(" .:-=+*#%@"[v * 10 // 256] for v in row) for row in digit))
