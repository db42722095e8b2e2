"""Training-set augmentation: random distortions made once, random shifts drawn every epoch.

Two cheap ways to show a small network more digits than the 60k it has:
- `distorted_copy`: every image rotated, scaled and sheared by its own random small amount. One
  Pillow MESH transform over a mosaic of all images does this at C speed (seconds per copy of
  the 60k training set, docs/benchmarks.md), so a few copies are made before training starts.
  Optionally each image's strokes also get thinner or thicker (`change_stroke_width`): digits
  drawn with a thick brush or typeset in a light font differ from MNIST's pens mostly in that.
- `EpochBuilder`: each epoch, every training image is drawn from the original or one of its
  distorted copies, and shifted by a random whole number of pixels. Shifting image by image costs
  more than the training step itself in NumPy, so the epoch is written into a uint8 buffer with
  images grouped by shift: (2s+1)^2 large slicing copies, which the trainer runs in a background
  thread for the next epoch while the current one trains.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

# Empty border around each image in the mosaic, so a distorted image samples zeros, never its
# neighbour (MNIST digits also keep ~4 px of empty border inside their 28x28 frame).
_MOSAIC_PAD = 4
_MOSAIC_COLUMNS = 256


def distorted_copy(
    images: np.ndarray,
    rng: np.random.Generator,
    max_degrees: float,
    max_scale: float,
    max_shear: float,
    threads: int = 2,
    max_stroke: float = 0.0,
) -> np.ndarray:
    """A copy of uint8 `images` `(n, h, w)`, each rotated by up to `max_degrees`, zoomed by up to
    `max_scale` (relative) and sheared horizontally by up to `max_shear`, about its centre,
    with bilinear interpolation, then (if `max_stroke` > 0) given strokes thinner or thicker by
    up to `max_stroke` (see `change_stroke_width`). Chunks run in threads (Pillow and numpy
    release the GIL); each chunk has its own generator spawned from `rng`, so the result does not
    depend on `threads`."""
    chunks = np.array_split(images, 4)
    jobs = zip(chunks, rng.spawn(len(chunks)), strict=True)
    with ThreadPoolExecutor(threads) as pool:
        parts = pool.map(
            lambda job: _distort_chunk(
                job[0], job[1], max_degrees, max_scale, max_shear, max_stroke
            ),
            jobs,
        )
        return np.concatenate(list(parts))


def change_stroke_width(images: np.ndarray, amounts: np.ndarray) -> np.ndarray:
    """uint8 `images` `(n, h, w)` with thicker (amount > 0) or thinner (amount < 0) strokes.

    Grayscale dilation (each pixel becomes the maximum of itself and its 4 neighbours) widens
    every stroke by about a pixel on each side; erosion (the minimum) narrows it as much. Image i
    becomes `image + |amounts[i]| * (dilated or eroded - image)`: amounts in [-1, 1] give every
    width in between, a fraction of a pixel included (the edges' gray levels move)."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    cross = [
        padded[:, 1:-1, 1:-1],
        padded[:, :-2, 1:-1],
        padded[:, 2:, 1:-1],
        padded[:, 1:-1, :-2],
        padded[:, 1:-1, 2:],
    ]
    thick = amounts[:, None, None] > 0
    target = np.where(thick, np.maximum.reduce(cross), np.minimum.reduce(cross))
    blend = np.abs(amounts).astype(np.float32)[:, None, None]
    out = images + blend * (target.astype(np.float32) - images)
    return np.rint(out).astype(np.uint8)


def _distort_chunk(
    images: np.ndarray,
    rng: np.random.Generator,
    max_degrees: float,
    max_scale: float,
    max_shear: float,
    max_stroke: float,
) -> np.ndarray:
    n, h, w = images.shape
    pad, cols = _MOSAIC_PAD, _MOSAIC_COLUMNS
    tile_h, tile_w = h + 2 * pad, w + 2 * pad
    rows = -(-n // cols)
    tiles = np.zeros((rows * cols, h, w), np.uint8)
    tiles[:n] = images
    mosaic = np.zeros((rows, tile_h, cols, tile_w), np.uint8)
    mosaic[:, pad : pad + h, :, pad : pad + w] = tiles.reshape(rows, cols, h, w).transpose(
        0, 2, 1, 3
    )

    # Output offset (dx, dy) from an image's centre samples the source at centre + M (dx, dy),
    # M = rotation(angle) / scale followed by a horizontal shear.
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees, n))
    scale = rng.uniform(1 - max_scale, 1 + max_scale, n)
    shear = rng.uniform(-max_shear, max_shear, n)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    m00, m01, m10, m11 = cos, sin + shear * cos, -sin, cos - shear * sin

    index = np.arange(n)
    centre_x = (index % cols) * tile_w + tile_w / 2
    centre_y = (index // cols) * tile_h + tile_h / 2
    corners = [(-w / 2, -h / 2), (-w / 2, h / 2), (w / 2, h / 2), (w / 2, -h / 2)]  # UL LL LR UR
    quads = np.stack(
        [
            coordinate
            for dx, dy in corners
            for coordinate in (centre_x + m00 * dx + m01 * dy, centre_y + m10 * dx + m11 * dy)
        ],
        axis=1,
    ).tolist()
    boxes = zip((index % cols) * w, (index // cols) * h, strict=True)
    mesh = [((x, y, x + w, y + h), tuple(q)) for (x, y), q in zip(boxes, quads, strict=True)]
    source = Image.fromarray(mosaic.reshape(rows * tile_h, cols * tile_w))
    out = source.transform(
        (cols * w, rows * h), Image.Transform.MESH, mesh, Image.Resampling.BILINEAR
    )
    out = np.asarray(out).reshape(rows, h, cols, w).transpose(0, 2, 1, 3)
    out = out.reshape(rows * cols, h, w)[:n]
    if max_stroke:  # drawn after the geometry, which is therefore the same with or without
        out = change_stroke_width(out, rng.uniform(-max_stroke, max_stroke, n))
    return out


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch's images are: row i is pool image `source[i]`, shifted by `shift_ids[i]`
    (an index into the (2 max_shift + 1)^2 shifts; None without shifts)."""

    source: np.ndarray
    shift_ids: np.ndarray | None


class EpochBuilder:
    """Builds each epoch's training images from a pool: the originals plus `copies` (distorted
    versions of them, each `(n, side, side)`), every image shifted at random by up to `max_shift`
    pixels along each axis, zeros (background) moving in at the edges.

    Drawing (`draw`, all the randomness) and copying (`assemble`, most of the time) are separate,
    so that the trainer can draw in order and copy the next epoch in the background."""

    def __init__(self, pixels: np.ndarray, max_shift: int, copies: list[np.ndarray] = ()):
        n = len(pixels)
        self.n = n
        self.side = round(np.sqrt(pixels[0].size))
        self.variants = 1 + len(copies)
        self.max_shift = max_shift
        pad = max_shift
        size = self.side + 2 * pad
        self.pool = np.zeros((self.variants * n, size, size), dtype=np.uint8)
        for variant, images in enumerate([pixels, *copies]):
            self.pool[
                variant * n : (variant + 1) * n, pad : pad + self.side, pad : pad + self.side
            ] = images.reshape(n, self.side, self.side)

    def new_buffer(self) -> np.ndarray:
        """Room for one epoch's images `(n, side, side)` uint8."""
        return np.empty((self.n, self.side, self.side), dtype=np.uint8)

    def draw(self, order: np.ndarray, rng: np.random.Generator) -> EpochPlan:
        """Row i will be a random variant of image order[i], randomly shifted."""
        source = order
        if self.variants > 1:
            source = order + self.n * rng.integers(0, self.variants, size=len(order))
        if not self.max_shift:
            return EpochPlan(source, None)
        span = 2 * self.max_shift + 1
        return EpochPlan(source, rng.integers(0, span * span, size=len(order)))

    def assemble(self, plan: EpochPlan, buffer: np.ndarray) -> np.ndarray:
        """The planned images `(len(plan.source), side * side)` uint8, written into `buffer`."""
        count = len(plan.source)
        out = buffer[:count]
        if plan.shift_ids is None:
            np.take(self.pool, plan.source, axis=0, out=out)
            return out.reshape(count, -1)
        span = 2 * self.max_shift + 1
        # One slicing copy per shift, for all the images that got it.
        positions = np.argsort(plan.shift_ids, kind="stable")
        counts = np.bincount(plan.shift_ids, minlength=span * span)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for shift_id in range(span * span):
            where = positions[bounds[shift_id] : bounds[shift_id + 1]]
            top, left = divmod(shift_id, span)
            rows = self.pool[plan.source[where], top : top + self.side, left : left + self.side]
            out[where] = rows
        return out.reshape(count, -1)

    def build(self, order: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`draw`, then `assemble` into a fresh buffer."""
        return self.assemble(self.draw(order, rng), self.new_buffer())

    def ahead(
        self, rng: np.random.Generator, first: int, stop: int
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, dict]]:
        """For epochs first..stop-1: (epoch, shuffled order, images `(n, side * side)`, the
        generator's state right after this epoch's draws: what a checkpoint after it must hold).

        The next epoch's images are copied in a background thread (numpy releases the GIL while
        copying) while the caller trains on these, into the other of two buffers; everything
        random is drawn here, in order, so `rng` gives the sequence a plain loop would."""
        if first >= stop:
            return
        buffers = (self.new_buffer(), self.new_buffer())
        with ThreadPoolExecutor(max_workers=1) as background:

            def prepare(epoch: int) -> tuple[np.ndarray, Future, dict]:
                order = rng.permutation(self.n)
                plan = self.draw(order, rng)
                images = background.submit(self.assemble, plan, buffers[epoch % 2])
                return order, images, rng.bit_generator.state

            upcoming = prepare(first)
            for epoch in range(first, stop):
                order, images, state = upcoming
                pixels = images.result()
                if epoch + 1 < stop:
                    upcoming = prepare(epoch + 1)
                yield epoch, order, pixels, state
