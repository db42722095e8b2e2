"""netcore.images: real image files of every supported kind -> MNIST-style 28x28 pixels.

Real MNIST digits are written in each format and layout a user might have (paper scans, colour,
alpha, 16-bit, palette, huge, rotated by EXIF, off-centre) and must come back as the digit; broken
and hostile files (empty, truncated, random bytes, decompression bombs) must each give a reason.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netcore.errors import ImageError
from netcore.images import (
    DEFAULT_MAX_PIXELS,
    WORK_SIDE,
    is_image_name,
    load_digit,
    load_digits,
    mnist_style,
    read_gray,
)
from netcore.mnist import read_parquet
from tests.builders import png_claiming

# Mean absolute difference (0-255 levels) between two different MNIST digits is about 40; a
# digit that went through resampling, JPEG and re-centring stays well under this.
RESAMPLED_MAD = 20


@pytest.fixture(scope="module")
def digits(small_mnist_dir: Path) -> np.ndarray:
    pixels, _ = read_parquet(small_mnist_dir / "test-00000-of-00001.parquet")
    return pixels


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int64) - b.astype(np.int64)).mean())


def close_to_mnist(result: np.ndarray, digit: np.ndarray, levels: int = 1) -> bool:
    """Equal, up to `levels` (the stretch to full contrast moves 254 to 255: one level)."""
    return int(np.abs(result.astype(np.int64) - digit).max()) <= levels


def test_real_mnist_digits_come_back_unchanged(digits: np.ndarray) -> None:
    pixels, problems = mnist_style(list(digits))
    assert problems == [None] * len(digits)
    full_contrast = digits.max(axis=(1, 2)) == 255
    assert np.array_equal(pixels[full_contrast], digits[full_contrast])
    assert all(close_to_mnist(p, d) for p, d in zip(pixels, digits, strict=True))


def test_batch_result_does_not_depend_on_the_batch(digits: np.ndarray) -> None:
    grays = [*list(digits[:20]), np.kron(255 - digits[20], np.ones((3, 3), np.uint8))]
    together, _ = mnist_style(grays)
    alone = np.stack([mnist_style([gray])[0][0] for gray in grays])
    assert np.array_equal(together, alone)


def test_extensions_match_case_insensitively() -> None:
    for name in ["a.png", "B.PNG", "c.JpEg", "d.jpg", "e.bmp", "f.GIF", "g.tif", "h.TIFF"]:
        assert is_image_name(name), name
    assert is_image_name("dir.v2/i.WebP")
    for name in ["notes.txt", "png", "a.png.bak", "model.safetensors", ".png.swp"]:
        assert not is_image_name(name), name
    # Extensions as os.path.splitext finds them: a name's leading dots start none.
    for name in [".png", "..png", "dir/.PNG", "a.png/b", "", ".", "x."]:
        assert is_image_name(name) == (os.path.splitext(name)[1].lower() == ".png"), name
    for name in [".hidden.png", "a..png", "dir/..x.jpg"]:
        assert is_image_name(name), name


def save(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def on_paper(digit: np.ndarray) -> Image.Image:
    return Image.fromarray(255 - digit)


# Layouts that only recode pixels: the result must be the digit itself.
EXACT_CASES = {
    "black on white (paper, Paint)": lambda d: on_paper(d),
    "black strokes on a transparent canvas": lambda d: Image.merge(
        "RGBA", [Image.new("L", d.shape, 0)] * 3 + [Image.fromarray(d)]
    ),
    "white strokes on a transparent canvas": lambda d: Image.merge(
        "RGBA", [Image.new("L", d.shape, 255)] * 3 + [Image.fromarray(d)]
    ),
    "gray + alpha (LA)": lambda d: Image.merge(
        "LA", [Image.new("L", d.shape, 0), Image.fromarray(d)]
    ),
    "16-bit grayscale": lambda d: Image.fromarray(d.astype(np.uint16) * 257),
    "16-bit, dark on light": lambda d: Image.fromarray(65535 - d.astype(np.uint16) * 257),
    "palette on paper": lambda d: on_paper(d).convert("P"),
}


# WebP stores only 8-bit colour or gray, without a palette.
NOT_IN_WEBP = ("16-bit grayscale", "16-bit, dark on light", "palette on paper")


@pytest.mark.parametrize(
    ("layout", "extension"),
    [
        (layout, ext)
        for layout in EXACT_CASES
        for ext in (".png", ".tiff", ".webp")
        if not (ext == ".webp" and layout in NOT_IN_WEBP)
    ],
)
def test_lossless_layouts_give_the_digit_back(
    layout: str, extension: str, digits: np.ndarray, tmp_path: Path
) -> None:
    path = save(EXACT_CASES[layout](digits[0]), tmp_path / f"digit{extension}", lossless=True)
    assert close_to_mnist(load_digit(path), digits[0]), layout


def test_colour_ink_on_paper(digits: np.ndarray, tmp_path: Path) -> None:
    """Blue pen: gray = 255 - 0.46 x ink, stored in whole levels, so the stretch back to full
    contrast is exact within a level or two."""
    pen = Image.merge("RGB", [Image.fromarray(255 - digits[2] // k) for k in (2, 3, 1)])
    assert close_to_mnist(load_digit(save(pen, tmp_path / "pen.png")), digits[2], levels=2)


def test_palette_gif_with_transparency_and_bilevel_png(digits: np.ndarray, tmp_path: Path) -> None:
    digit = digits[1]
    palette = Image.fromarray(np.where(digit > 127, 1, 0).astype(np.uint8), mode="P")
    palette.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    gif = save(palette, tmp_path / "digit.gif", transparency=0)  # white = transparent
    png = save(Image.fromarray(digit).convert("1"), tmp_path / "digit.png")
    binary = np.where(digit > 127, 255, 0).astype(np.uint8)
    # Thresholding moves the centre of mass a little; both must still be this digit.
    for path in (gif, png):
        assert mad(load_digit(path), binary) < 8, path


def test_images_needing_resampling_are_the_digit(digits: np.ndarray, tmp_path: Path) -> None:
    """Large, off-centre, JPEG, huge, rotated by EXIF, noisy gray paper: close to the digit, and
    far closer than another digit is."""
    rng = np.random.default_rng(0)
    cases: dict[str, list[float]] = {}
    for index, digit in enumerate(digits[:12]):
        big = on_paper(digit).resize((84, 84), Image.Resampling.BICUBIC)
        canvas = Image.new("L", (200, 150), 255)
        canvas.paste(big, (100, 30))
        huge = Image.new("L", (WORK_SIDE + 1000, WORK_SIDE), 250)
        huge.paste(on_paper(digit).resize((600, 600), Image.Resampling.BICUBIC), (900, 700))
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones write it
        paper = (255.0 - digit) * 0.7 + 40 + rng.normal(0, 8, digit.shape)
        noisy = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))
        files = {
            "off-centre JPEG": save(canvas, tmp_path / f"a{index}.JPG", quality=85),
            "huge PNG": save(huge, tmp_path / f"b{index}.png"),
            "EXIF-rotated JPEG": save(
                big.rotate(90, expand=True), tmp_path / f"c{index}.jpeg", exif=exif, quality=95
            ),
            "noisy gray paper": save(noisy.resize((112, 112)), tmp_path / f"d{index}.bmp"),
        }
        for case, path in files.items():
            cases.setdefault(case, []).append(mad(load_digit(path), digit))
    other_digit = np.mean([mad(digits[i], digits[i + 12]) for i in range(12)])
    assert other_digit > 1.5 * RESAMPLED_MAD
    for case, distances in cases.items():
        assert np.mean(distances) < RESAMPLED_MAD, (case, distances)


def test_a_tight_crop_keeps_its_polarity(digits: np.ndarray, tmp_path: Path) -> None:
    """Ink covering much of a tight crop is still ink (the background is the densest level), up
    to 60% of the crop: beyond that, which is ink is ambiguous."""
    checked = 0
    for index, digit in enumerate(digits[:60]):
        box = Image.fromarray(digit).getbbox()
        crop = save(Image.fromarray(digit).crop(box), tmp_path / f"t{index}.png")
        paper = save(on_paper(digit).crop(box), tmp_path / f"p{index}.png")
        assert mad(load_digit(crop), load_digit(paper)) < 1
        if (np.asarray(Image.open(crop)) > 0).mean() <= 0.6:
            assert mad(load_digit(crop), digit) < 12, index
            checked += 1
    assert checked > 40


def patched(image_format: str, offset: int, layout: str, width: int, height: int) -> bytes:
    """A 1x1 image whose header is rewritten to claim width x height."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, image_format)
    data = bytearray(buffer.getvalue())
    data[offset : offset + struct.calcsize(layout)] = struct.pack(layout, width, height)
    return bytes(data)


def encoded(digit: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(digit).resize((64, 64)).save(buffer, image_format)
    return buffer.getvalue()


def hostile_files(digit: np.ndarray) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, what the error must say)."""
    png, jpeg = encoded(digit, "PNG"), encoded(digit, "JPEG")
    corrupt = bytearray(png)
    corrupt[60:80] = b"\xff" * 20
    return {
        "empty.png": (b"", "empty file"),
        "truncated.png": (png[: len(png) // 2], "cannot decode"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "cannot decode"),
        "corrupt-data.png": (bytes(corrupt), "cannot decode"),
        "notes.png": (b"shopping list: eggs, milk\n", "not an image"),
        "random.jpg": (np.random.default_rng(0).bytes(4096), "not an image"),
        "bomb-40000.png": (png_claiming(40000, 40000), "refused without decoding"),
        "bomb-10000.png": (png_claiming(10000, 10000), "over the per-image limit"),
        "bomb.bmp": (patched("BMP", 18, "<ii", 30000, 30000), "refused without decoding"),
        "bomb.gif": (patched("GIF", 6, "<HH", 60000, 60000), "refused without decoding"),
        "blank.png": (encoded(np.full_like(digit, 255), "PNG"), "blank"),
    }


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_broken_and_hostile_files_each_give_a_reason(digits: np.ndarray, tmp_path: Path) -> None:
    cases = hostile_files(digits[0])
    assert len(cases["bomb-40000.png"][0]) < 2000  # a few hundred bytes claiming 1.6 G pixels
    names = []
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
        names.append(str(tmp_path / name))
    (tmp_path / "good.png").write_bytes(encoded(digits[0], "PNG"))
    names.append(str(tmp_path / "good.png"))
    names.append(str(tmp_path / "vanished.png"))  # listed, then deleted before it was read

    pixels, problems = load_digits(names)
    for (name, (_, expected)), problem in zip(cases.items(), problems, strict=False):
        assert problem is not None and expected in problem, (name, problem)
        assert "\n" not in problem
    assert problems[-2] is None and pixels[-2].max() > 200
    assert "cannot open" in problems[-1]
    assert not pixels[: len(cases)].any()  # error rows carry no pixels
    with pytest.raises(ImageError, match=r"bomb-10000\.png: .*over the per-image limit"):
        read_gray(tmp_path / "bomb-10000.png")


def test_the_pixel_limit_is_configurable(digits: np.ndarray, tmp_path: Path) -> None:
    path = save(on_paper(digits[0]).resize((100, 100)), tmp_path / "scan.png")
    assert close_to_mnist(load_digit(path), load_digit(path, max_pixels=DEFAULT_MAX_PIXELS))
    _, problems = load_digits([str(path)], max_pixels=5000)
    assert "100x100 = 10,000 pixels, over the per-image limit of 5,000" in problems[0]
    with pytest.raises(ValueError, match="max_pixels"):
        read_gray(path, max_pixels=0)


def test_a_decompression_bomb_costs_no_memory(tmp_path: Path) -> None:
    """Decoding the 40000x40000 header would take 1.6 GB; refusing it takes nothing."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(40000, 40000))
    # VmHWM is this process's own peak; ru_maxrss would carry over the forking parent's (pytest's).
    code = (
        "import re, sys; from pathlib import Path; from netcore.images import load_digits; "
        "_, problems = load_digits([sys.argv[1]]); print(problems[0]); "
        "print(re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, check=True
    )
    problem, peak_kib = done.stdout.splitlines()
    assert "refused without decoding" in problem
    assert int(peak_kib) < 300_000  # the interpreter, numpy and Pillow: well under 300 MB
