"""Digits from outside MNIST: a labelled folder of four kinds, and the models' accuracy on each.

    .venv/bin/python -m bench.outside_digits generate data/outside-digits
    .venv/bin/python -m bench.outside_digits score data/outside-digits MODEL_DIR [MODEL_DIR ...]

`generate` writes `<kind>/<index>_<label>.<png|jpg>`, the same images for the same `--seed`:
- paint: thick strokes drawn with a round brush, black on white, hard edges, as in a paint
  program (digit shapes from hand-made stroke paths, jittered per image);
- font: digits typeset in every TrueType font on this machine (`fc-list`), sizes, weights,
  slants and positions varied, dark on light;
- scan: pen-like strokes on paper (texture and tint), slightly rotated, blurred and noisy, as a
  flatbed scan of a handwritten form;
- photo: a digit on paper photographed: colour (ink and paper tints), uneven lighting, a
  perspective tilt, blur, sensor noise, saved as JPEG.

`score` reads every image through `netcore.images.load_digits` (the product's decoding and
MNIST-style normalization), scores each model and prints the accuracy per kind and overall; an
image load_digits refuses (it finds no digit) counts as a mistake for every model, and the count
is printed. The last line on stdout is one JSON object with all of it.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

KINDS = ("paint", "font", "scan", "photo")

# Digit shapes as strokes (polylines) in a unit box, x to the right, y down. Arcs are expanded
# into points by `_arc`; each image jitters the points and applies its own slant and aspect.


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, steps: int = 24):
    """Points along an ellipse from angle `start` to `end` (degrees, 0 = right, 90 = down)."""
    angles = np.radians(np.linspace(start, end, steps))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [_arc(0.5, 0.5, 0.3, 0.42, -90, 275, 40)],
    1: [[(0.43, 0.2), (0.56, 0.08), (0.52, 0.92)]],  # a short upstroke, not a 7's bar
    2: [[*_arc(0.5, 0.3, 0.28, 0.22, 190, 370), (0.22, 0.9), (0.82, 0.9)]],
    3: [_arc(0.47, 0.29, 0.28, 0.2, 200, 450), _arc(0.47, 0.69, 0.31, 0.22, -90, 160)],
    4: [[(0.62, 0.92), (0.62, 0.08), (0.16, 0.64), (0.86, 0.64)]],
    5: [[(0.78, 0.1), (0.32, 0.1), (0.27, 0.46), *_arc(0.5, 0.65, 0.3, 0.26, -130, 150)]],
    6: [[(0.7, 0.1), (0.46, 0.24), (0.28, 0.5), *_arc(0.5, 0.68, 0.24, 0.23, 180, 545)]],
    7: [[(0.18, 0.1), (0.82, 0.1), (0.42, 0.92)]],
    8: [_arc(0.5, 0.28, 0.2, 0.19, 90, 450), _arc(0.5, 0.69, 0.26, 0.22, -90, 270)],
    9: [_arc(0.5, 0.32, 0.24, 0.22, 0, 365), [(0.74, 0.32), (0.64, 0.92)]],
}


def _stroke_points(
    label: int, rng: np.random.Generator, size: int, margin: float
) -> list[list[tuple[float, float]]]:
    """The digit's strokes in pixels of a `size` square, jittered, slanted and squeezed."""
    slant = rng.uniform(-0.25, 0.25)
    aspect = rng.uniform(0.7, 1.1)
    angle = math.radians(rng.uniform(-8, 8))
    cos, sin = math.cos(angle), math.sin(angle)
    strokes = []
    for stroke in STROKES[label]:
        points = np.array(stroke) + rng.normal(0, 0.02, (len(stroke), 2))
        x = (points[:, 0] - 0.5) * aspect + slant * (0.5 - points[:, 1])
        y = points[:, 1] - 0.5
        x, y = cos * x - sin * y, sin * x + cos * y
        scale = size * (1 - 2 * margin)
        strokes.append(list(zip(size / 2 + scale * x, size / 2 + scale * y, strict=True)))
    return strokes


def _draw_strokes(draw: ImageDraw.ImageDraw, strokes, width: int, fill) -> None:
    """Polylines with round ends and joints, like a round brush."""
    for points in strokes:
        draw.line(points, fill=fill, width=width, joint="curve")
        r = width / 2
        for x, y in (points[0], points[-1]):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


def paint(label: int, rng: np.random.Generator) -> Image.Image:
    """A thick round brush on a white canvas, no anti-aliasing (a paint program's pencil)."""
    size = int(rng.integers(160, 320))
    image = Image.new("L", (size, size), 255)
    width = max(3, int(size * rng.uniform(0.08, 0.16)))
    _draw_strokes(ImageDraw.Draw(image), _stroke_points(label, rng, size, 0.18), width, 0)
    return image


def font_files() -> list[str]:
    """The TrueType / OpenType fonts on this machine, per fc-list, sorted."""
    listing = subprocess.run(["fc-list", "--format", "%{file}\\n"], capture_output=True, text=True)
    files = {line for line in listing.stdout.splitlines() if line.endswith((".ttf", ".otf"))}
    return sorted(files)


def font(label: int, rng: np.random.Generator, fonts: list[str]) -> Image.Image:
    """The digit typeset in a random font, size and position, dark on light."""
    size = int(rng.integers(64, 200))
    typeface = ImageFont.truetype(fonts[int(rng.integers(len(fonts)))], int(size * 0.7))
    image = Image.new("L", (size, size), int(rng.integers(215, 256)))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), str(label), font=typeface)
    x = (size - (right - left)) / 2 - left + rng.uniform(-0.1, 0.1) * size
    y = (size - (bottom - top)) / 2 - top + rng.uniform(-0.1, 0.1) * size
    draw.text((x, y), str(label), fill=int(rng.integers(0, 60)), font=typeface)
    return image


def _paper(size: int, rng: np.random.Generator, level: float, grain: float) -> np.ndarray:
    """A paper background in [0, 1]: a level, a slow unevenness and a fine grain."""
    coarse = rng.normal(0, 1, (6, 6)).astype(np.float32)
    slow = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
    return level + 0.02 * slow + rng.normal(0, grain, (size, size))


def scan(label: int, rng: np.random.Generator) -> Image.Image:
    """Pen strokes on paper, scanned: tint, texture, a small rotation, blur and noise."""
    size = int(rng.integers(96, 200))
    ink = Image.new("L", (size, size), 0)
    width = max(2, int(size * rng.uniform(0.03, 0.07)))
    _draw_strokes(ImageDraw.Draw(ink), _stroke_points(label, rng, size, 0.2), width, 255)
    ink = ink.rotate(rng.uniform(-6, 6), resample=Image.Resampling.BILINEAR)
    ink = ink.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    darkness = rng.uniform(0.55, 0.85) * np.asarray(ink, np.float32) / 255
    page = _paper(size, rng, rng.uniform(0.85, 0.97), 0.02) - darkness
    page += rng.normal(0, 0.03, page.shape)
    return Image.fromarray(np.clip(page * 255, 0, 255).astype(np.uint8))


def photo(label: int, rng: np.random.Generator) -> Image.Image:
    """A digit on paper, photographed: colours, a light gradient, perspective, blur, JPEG."""
    size = int(rng.integers(200, 400))
    ink = Image.new("L", (size, size), 0)
    width = max(3, int(size * rng.uniform(0.03, 0.08)))
    _draw_strokes(ImageDraw.Draw(ink), _stroke_points(label, rng, size, 0.25), width, 255)
    # Perspective: the corners of the page move inwards by up to 12% of the side.
    corners = rng.uniform(0, 0.12, 8) * size
    quad = (
        corners[0],
        corners[1],
        corners[2],
        size - corners[3],
        size - corners[4],
        size - corners[5],
        size - corners[6],
        corners[7],
    )
    ink = ink.transform((size, size), Image.Transform.QUAD, quad, Image.Resampling.BILINEAR)
    ink = ink.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 2.0)))
    amount = np.asarray(ink, np.float32)[:, :, None] / 255
    paper_rgb = rng.uniform(0.75, 0.95) * (1 - rng.uniform(0, 0.12, 3))  # white, a little tinted
    ink_rgb = rng.choice([[0.1, 0.1, 0.12], [0.1, 0.15, 0.5], [0.05, 0.05, 0.05]])
    pixels = paper_rgb * (1 - amount) + ink_rgb * amount
    # Uneven lighting: brightness falls off linearly in a random direction.
    ys, xs = np.mgrid[0:size, 0:size] / size
    direction = rng.uniform(0, 2 * math.pi)
    falloff = rng.uniform(0.1, 0.35)
    light = 1 - falloff * (math.cos(direction) * xs + math.sin(direction) * ys + 1) / 2
    pixels = pixels * light[:, :, None] + rng.normal(0, 0.02, pixels.shape)
    image = Image.fromarray(np.clip(pixels * 255, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(40, 85)))
    return Image.open(io.BytesIO(buffer.getvalue()))


def generate(folder: Path, per_kind: int, seed: int) -> dict[str, int]:
    """Write `per_kind` images of each kind, labels cycling 0-9; returns the count per kind."""
    fonts = font_files()
    if not fonts:
        raise SystemExit("no TrueType fonts found by fc-list")
    makers: dict[str, Callable[[int, np.random.Generator], Image.Image]] = {
        "paint": paint,
        "font": lambda label, rng: font(label, rng, fonts),
        "scan": scan,
        "photo": photo,
    }
    counts = {}
    for kind_index, kind in enumerate(KINDS):
        out = folder / kind
        out.mkdir(parents=True, exist_ok=True)
        streams = np.random.SeedSequence([seed, kind_index]).spawn(per_kind)
        for index, stream in enumerate(streams):
            label = index % 10
            image = makers[kind](label, np.random.default_rng(stream))
            extension = "jpg" if kind == "photo" else "png"
            if kind == "photo":
                image.save(out / f"{index:04d}_{label}.jpg", "JPEG", quality=95)
            else:
                image.save(out / f"{index:04d}_{label}.{extension}")
        counts[kind] = per_kind
    return counts


def score(folder: Path, models: list[Path]) -> dict:
    """Accuracy of each model on each kind (and all kinds together)."""
    from netcore.images import load_digits
    from netcore.preprocess import normalize
    from netcore.weights import load_model

    networks = {str(path): load_model(path) for path in models}
    results: dict[str, dict[str, float]] = {name: {} for name in networks}
    counts: dict[str, int] = {}
    refused: dict[str, list[str]] = {}
    totals = {name: [0, 0] for name in networks}
    for kind in KINDS:
        files = sorted(p for p in (folder / kind).iterdir() if p.suffix in (".png", ".jpg"))
        labels = np.array([int(p.stem.split("_")[1]) for p in files])
        pixels, problems = load_digits([str(p) for p in files])
        readable = np.array([problem is None for problem in problems])
        refused[kind] = [f"{f.name}: {why}" for f, why in zip(files, problems, strict=True) if why]
        counts[kind] = len(files)
        for name, network in networks.items():
            predicted = network.predict(normalize(pixels, network.config))
            correct = int(((predicted == labels) & readable).sum())
            results[name][kind] = correct / len(files)
            totals[name][0] += correct
            totals[name][1] += len(files)
    for name, (correct, total) in totals.items():
        results[name]["all"] = correct / total
    return {"counts": counts, "refused": refused, "accuracy": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("generate", help="write the labelled folder")
    make.add_argument("folder", type=Path)
    make.add_argument("--per-kind", type=int, default=300)
    make.add_argument("--seed", type=int, default=0)
    rate = commands.add_parser("score", help="accuracy per kind of one or more model folders")
    rate.add_argument("folder", type=Path)
    rate.add_argument("models", type=Path, nargs="+")
    args = parser.parse_args()

    if args.command == "generate":
        counts = generate(args.folder, args.per_kind, args.seed)
        print(f"wrote {counts} into {args.folder}")
        return
    result = score(args.folder, args.models)
    header = " | ".join(KINDS)
    print(f"| model | {header} | all |")
    print("|---" * (len(KINDS) + 2) + "|")
    for name, accuracies in result["accuracy"].items():
        cells = " | ".join(f"{accuracies[k]:.1%}" for k in (*KINDS, "all"))
        print(f"| {name} | {cells} |")
    for kind, reasons in result["refused"].items():
        for reason in reasons:
            print(f"refused by load_digits ({kind}, counted as a mistake): {reason}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
