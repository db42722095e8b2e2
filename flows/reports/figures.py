"""Pictures of a model and its results, drawn with matplotlib (Agg, no display) into PNG files.

Pure functions: arrays in, one PNG file out, returning its path. Each figure has a fixed size in
pixels (see the `*_SIZE` constants and `weights_grid_size`), so pages lay out predictably.

    training_curves(history, "curves.png")            # loss and accuracy per epoch
    confusion_heatmap(confusion, "confusion.png")     # row = true class, column = predicted
    confusion_difference(second_minus_first, "difference.png", "v2", "v3")   # two versions
    confident_mistakes(pixels, labels, probabilities, "mistakes.png")
    first_layer_weights(network.weights[0], "weights.png")   # an MLP's (784, neurons)
    first_conv_filters(network.weights[0], "filters.png")    # a CNN's (k, k, channels, filters)
    class_histogram(labels, "classes.png"); confidence_histogram(confidences, "confidence.png")
    image_grid(images, captions, "grid.png", title="...")
    model_figures(folder, history, test_pixels, test_labels, probabilities, first_layer)

`model_figures` draws the set every published version carries (MODEL_FIGURES: the first layer's
picture is the weight tiles for an MLP, the filters for a CNN); the evaluate stage calls it, and
`digitflow report` shows the result.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from netcore.io import write_atomic
from netcore.metrics import confusion_matrix

DPI = 100
CURVES_SIZE = (1000, 400)
CONFUSION_SIZE = (640, 580)
HISTOGRAM_SIZE = (640, 360)
GRID_COLUMNS, GRID_ROWS = 8, 3  # image grids show up to 24 images
GRID_SIZE = (880, 480)
GRID_HEADER = 50  # pixels above the images for the title
GRID_TILE = 84  # pixels per 28x28 image (3 per pixel)
WEIGHT_COLUMNS = 16
WEIGHT_TILE = 60  # pixels per neuron in the weights grid
WEIGHT_HEADER = 80  # pixels above the tiles for the title and the colour key
FILTER_COLUMNS = 8  # a CNN's filters: fewer, smaller and bigger on the page
FILTER_TILE = 120


def _new_figure(size: tuple[int, int]) -> Figure:
    # A bare Figure with an Agg canvas: no pyplot, so no global state and no GUI backend. The
    # sizes are fixed, so the margins are too (tight_layout would cost a second drawing).
    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path) -> Path:
    rendered = io.BytesIO()
    # No bbox_inches="tight": it would change the pixel size from one figure to the next.
    figure.savefig(rendered, format="png", dpi=DPI)
    # A 256-colour palette looks the same for these plots and makes the files 2-3 times smaller,
    # which matters because pages and Prefect artifacts carry them inline, base64-encoded.
    with Image.open(rendered) as image:
        palette = image.convert("RGB").quantize(
            256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    # The format is named: the temporary file's name does not end in .png.
    return write_atomic(path, lambda temp: palette.save(temp, format="PNG", optimize=True))


def _as_dict(epoch: Any) -> Mapping[str, Any]:
    return dataclasses.asdict(epoch) if dataclasses.is_dataclass(epoch) else epoch


def training_curves(
    history: Sequence[Any], path: str | Path, test_accuracy: float | None = None
) -> Path:
    """Loss and accuracy per epoch. `history` holds netcore EpochStats or their dicts (epoch,
    loss, train_accuracy, validation_accuracy, validation_loss); validation is drawn where it was
    measured, and
    `test_accuracy`, when given, as a dashed line."""
    rows = [_as_dict(epoch) for epoch in history]
    if not rows:
        raise ValueError("training_curves needs at least one epoch of history")
    epochs = [row["epoch"] for row in rows]
    figure = _new_figure(CURVES_SIZE)
    loss_axes, accuracy_axes = figure.subplots(1, 2)

    # A marker per epoch while they can be told apart; a plain line for long runs.
    dot, square = ("o", "s") if len(rows) <= 30 else (None, None)
    loss_axes.plot(epochs, [row["loss"] for row in rows], marker=dot, label="train")
    validation_loss = [(row["epoch"], row.get("validation_loss")) for row in rows]
    validation_loss = [(epoch, value) for epoch, value in validation_loss if value is not None]
    if validation_loss:
        loss_axes.plot(*zip(*validation_loss, strict=True), marker=square, label="validation")
    loss_axes.set(title="Loss (cross-entropy)", xlabel="epoch", ylabel="mean loss")
    loss_axes.set_ylim(bottom=0)

    accuracy_axes.plot(
        epochs, [100 * row["train_accuracy"] for row in rows], marker=dot, label="train"
    )
    validation = [(row["epoch"], row["validation_accuracy"]) for row in rows]
    validation = [(epoch, 100 * value) for epoch, value in validation if value is not None]
    if validation:
        accuracy_axes.plot(*zip(*validation, strict=True), marker=square, label="validation")
    if test_accuracy is not None:
        accuracy_axes.axhline(
            100 * test_accuracy, color="black", linestyle="--", label=f"test {test_accuracy:.2%}"
        )
    accuracy_axes.set(title="Accuracy", xlabel="epoch", ylabel="% correct")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
        # Whole epochs only: a fractional tick would suggest a measurement that was never taken.
        axes.xaxis.get_major_locator().set_params(integer=True)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.91, wspace=0.2)
    return _save(figure, path)


def confusion_heatmap(confusion: np.ndarray, path: str | Path) -> Path:
    """The confusion matrix (row = true class, column = predicted) with the count in each cell.
    The colour is the share of the true class, on a square-root-like scale so that the few
    mistakes stand out next to the diagonal."""
    confusion = np.asarray(confusion)
    totals = np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    shares = confusion / totals
    figure = _new_figure(CONFUSION_SIZE)
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", norm=PowerNorm(gamma=0.35, vmin=0, vmax=1))
    _count_cells(axes, confusion, dark=shares > 0.3)
    axes.set_title(f"Confusion matrix ({int(confusion.sum())} test images)")
    figure.colorbar(image, ax=axes, label="share of the true class")
    figure.subplots_adjust(left=0.1, right=0.98, bottom=0.1, top=0.93)
    return _save(figure, path)


def _count_cells(axes: Any, counts: np.ndarray, dark: np.ndarray, signed: bool = False) -> None:
    """Write each non-zero count of a class-by-class matrix in its cell (white on the `dark`
    ones, with its sign if `signed`) and name the axes: row = true class."""
    for (true, predicted), count in np.ndenumerate(np.asarray(counts, dtype=np.int64)):
        if count:
            axes.text(
                predicted,
                true,
                f"{count:+d}" if signed else str(count),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark[true, predicted] else "black",
            )
    ticks = range(len(counts))
    axes.set(xticks=ticks, yticks=ticks, xlabel="predicted class", ylabel="true class")


def confusion_difference(difference: np.ndarray, path: str | Path, first: str, second: str) -> Path:
    """Where two classifiers' confusion matrices differ (`difference` = second's minus first's,
    row = true class): each non-zero cell coloured and counted. On the diagonal a positive count
    is `second` getting more of that digit right; off it, more of that mistake."""
    difference = np.asarray(difference)
    classes = len(difference)
    limit = max(int(np.abs(difference).max()), 1)
    figure = _new_figure(CONFUSION_SIZE)
    axes = figure.subplots()
    masked = np.ma.masked_equal(difference, 0)
    colours = colormaps["RdBu_r"].with_extremes(bad="white")
    image = axes.imshow(masked, cmap=colours, vmin=-limit, vmax=limit)
    _count_cells(axes, difference, dark=np.abs(difference) > limit * 0.6, signed=True)
    for cell in range(classes):  # outline the diagonal: there, more is better
        axes.add_patch(
            Rectangle((cell - 0.5, cell - 0.5), 1, 1, fill=False, edgecolor="dimgray", lw=0.8)
        )
    axes.set_title(f"Confusion matrix of {second} minus {first}")
    figure.colorbar(image, ax=axes, label=f"images, {second} minus {first}")
    figure.subplots_adjust(left=0.1, right=0.98, bottom=0.1, top=0.93)
    return _save(figure, path)


def image_grid(
    images: Sequence[np.ndarray], captions: Sequence[str], path: str | Path, title: str
) -> Path:
    """Up to GRID_COLUMNS x GRID_ROWS 28x28 uint8 MNIST-style images (ink bright on dark, as the
    network sees them) drawn as dark ink on white paper, each under its caption."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if len(images) > GRID_COLUMNS * GRID_ROWS:
        raise ValueError(f"at most {GRID_COLUMNS * GRID_ROWS} images, got {len(images)}")
    width, height = GRID_SIZE
    cell_width, cell_height = width // GRID_COLUMNS, (height - GRID_HEADER) // GRID_ROWS
    figure = _new_figure(GRID_SIZE)
    figure.text(0.5, 1 - 24 / height, title, ha="center", va="center", fontsize=12)
    if not len(images):
        figure.text(0.5, 0.5, "none", ha="center", va="center", fontsize=14, color="gray")
    paper = colormaps["gray_r"]
    for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
        image = np.asarray(image)
        if image.shape != (28, 28):
            raise ValueError(f"image {index} is {image.shape}, expected 28x28")
        row, column = divmod(index, GRID_COLUMNS)
        left = column * cell_width + (cell_width - GRID_TILE) // 2
        bottom = height - GRID_HEADER - (row + 1) * cell_height  # pixels from the bottom edge
        # figimage puts pixels on the canvas as they are (no axes: fast): enlarge them here.
        scale = GRID_TILE // 28
        tile = image.repeat(scale, axis=0).repeat(scale, axis=1)
        figure.figimage(tile, xo=left, yo=bottom, cmap=paper, vmin=0, vmax=255, origin="upper")
        centre = (column + 0.5) * cell_width / width
        figure.text(
            centre,
            (bottom + GRID_TILE + 4) / height,
            caption,
            ha="center",
            va="bottom",
            fontsize=9,
            linespacing=1.1,
        )
    return _save(figure, path)


def most_confident_mistakes(
    labels: np.ndarray, probabilities: np.ndarray, count: int
) -> np.ndarray:
    """Indices of up to `count` wrongly classified rows, the most confident first."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-probabilities[wrong].max(axis=1), kind="stable")][:count]


def confident_mistakes(
    pixels: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, path: str | Path
) -> Path:
    """The test images the network got wrong with the highest confidence, captioned with the
    true class, the predicted class and its probability."""
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    worst = most_confident_mistakes(labels, probabilities, GRID_COLUMNS * GRID_ROWS)
    captions = [f"true {labels[i]}, said {predicted[i]}\n{confidence[i]:.1%}" for i in worst]
    mistakes = int(np.count_nonzero(predicted != labels))
    title = f"Most confidently wrong: {len(worst)} of {mistakes} mistakes"
    return image_grid(pixels[worst].reshape(len(worst), 28, 28), captions, path, title)


def weights_grid_size(
    tiles: int, columns: int = WEIGHT_COLUMNS, tile: int = WEIGHT_TILE
) -> tuple[int, int]:
    """Pixel size of `first_layer_weights` for a first layer of `tiles` hidden units."""
    rows = math.ceil(tiles / columns)
    return columns * tile, WEIGHT_HEADER + rows * tile


def filters_grid_size(filters: int) -> tuple[int, int]:
    """Pixel size of `first_conv_filters` for `filters` filters (times input channels)."""
    return weights_grid_size(filters, FILTER_COLUMNS, FILTER_TILE)


def _weight_tiles(
    tiles: np.ndarray, path: str | Path, title: str, key: str, columns: int, tile_pixels: int
) -> Path:
    """Square weight tiles `(count, side, side)` in rows of `columns`, `tile_pixels` apart, red
    positive and blue negative, each scaled to its own largest weight, under a title and a
    colour key."""
    count, side, _ = tiles.shape
    # One mosaic image, each tile scaled to [-1, 1] and framed by a NaN (white) gap: drawn with
    # one imshow at exactly 2 screen pixels per mosaic cell, it is fast and compresses well. A
    # small tile (a 5x5 filter) is enlarged to fill its cell but for the gap.
    cell = tile_pixels // 2
    if side > cell - 2:
        raise ValueError(f"weight tiles are drawn up to {cell - 2}x{cell - 2}, got {side}x{side}")
    scale = (cell - 2) // side
    rows = math.ceil(count / columns)
    mosaic = np.full((rows * cell, columns * cell), np.nan)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        limit = max(float(np.abs(tile).max()), 1e-12)
        big = np.kron(tile / limit, np.ones((scale, scale)))
        top, left = row * cell, column * cell
        mosaic[top : top + len(big), left : left + len(big)] = big
    width, height = weights_grid_size(count, columns, tile_pixels)
    figure = _new_figure((width, height))
    axes = figure.add_axes((0, 0, 1, rows * tile_pixels / height))
    axes.set_axis_off()
    colours = colormaps["RdBu_r"].with_extremes(bad="white")
    axes.imshow(mosaic, cmap=colours, vmin=-1, vmax=1, interpolation="nearest", aspect="auto")
    figure.text(0.5, 1 - 28 / height, title, ha="center", va="center", fontsize=14)
    figure.text(0.5, 1 - 58 / height, key, ha="center", va="center", fontsize=10, color="dimgray")
    return _save(figure, path)


def first_layer_weights(weights: np.ndarray, path: str | Path) -> Path:
    """Each hidden neuron's 784 input weights `(784, neurons)` as a 28x28 picture: red where ink
    excites the neuron, blue where it inhibits it (each tile scaled to its own largest weight)."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[0] != 784:
        raise ValueError(f"first-layer weights must be (784, neurons), got {weights.shape}")
    neurons = weights.shape[1]
    return _weight_tiles(
        weights.T.reshape(neurons, 28, 28),
        path,
        f"What the {neurons} hidden neurons look for",
        "first-layer weights as 28x28 images: red = ink here excites the neuron, "
        "blue = ink here inhibits it",
        WEIGHT_COLUMNS,
        WEIGHT_TILE,
    )


def first_conv_filters(weights: np.ndarray, path: str | Path) -> Path:
    """A convolution's filters `(k, k, channels, filters)` (netcore's layout), one k x k tile per
    filter and input channel: red where ink excites the filter, blue where it inhibits it (each
    tile scaled to its own largest weight). For the first layer of a CNN on grayscale digits,
    one tile per filter: the strokes and edges it responds to, wherever they are."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 4 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"conv filters must be (k, k, channels, filters), got {weights.shape}")
    kernel, _, channels, filters = weights.shape
    tiles = weights.transpose(3, 2, 0, 1).reshape(filters * channels, kernel, kernel)
    per_channel = f" x {channels} input channels" if channels > 1 else ""
    return _weight_tiles(
        tiles,
        path,
        f"What the {filters} filters of the first convolution look for{per_channel}",
        f"{kernel}x{kernel} filter weights: red = ink here excites the filter, "
        "blue = ink here inhibits it; each is slid over the whole image",
        FILTER_COLUMNS,
        FILTER_TILE,
    )


def class_histogram(labels: np.ndarray, path: str | Path, num_classes: int = 10) -> Path:
    """How many images were predicted as each class."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    figure = _new_figure(HISTOGRAM_SIZE)
    axes = figure.subplots()
    bars = axes.bar(range(num_classes), counts, color="tab:blue")
    axes.bar_label(bars, fontsize=8)
    axes.set(xticks=range(num_classes), xlabel="predicted class", ylabel="images")
    axes.set_title(f"Predicted classes ({int(counts.sum())} images)")
    axes.margins(y=0.12)
    figure.tight_layout()
    return _save(figure, path)


def confidence_histogram(confidences: np.ndarray, path: str | Path) -> Path:
    """How sure the network was: the top-class probability of each image, on a log count scale
    (most predictions pile up near 1)."""
    confidences = np.asarray(confidences, dtype=np.float64)
    figure = _new_figure(HISTOGRAM_SIZE)
    axes = figure.subplots()
    # The top probability of 10 classes is never below 0.1.
    axes.hist(confidences, bins=np.linspace(0.1, 1.0, 19), color="tab:orange", edgecolor="white")
    axes.set_yscale("log")
    median = float(np.median(confidences)) if len(confidences) else float("nan")
    axes.set(xlabel="confidence (probability of the predicted class)", ylabel="images (log)")
    axes.set_title(f"Confidence ({len(confidences)} images, median {median:.1%})")
    figure.tight_layout()
    return _save(figure, path)


# The figures every published version carries, in its FIGURES_DIR (flows.paths): file name ->
# caption, in the order pages show them.
# A version carries one of the last two: the first layer of an MLP, or of a CNN.
MODEL_FIGURES = {
    "training-curves.png": "Training curves: loss and accuracy per epoch",
    "confusion-matrix.png": "Confusion matrix on the test set",
    "confident-mistakes.png": "The test images it got wrong most confidently",
    "first-layer-weights.png": "What each hidden neuron looks for: the first layer's weights",
    "first-layer-filters.png": "What each filter of the first convolution looks for",
}
# The picture of a first layer, by the number of axes of its weights, and how it is drawn.
FIRST_LAYER_FIGURES = {
    2: ("first-layer-weights.png", first_layer_weights),
    4: ("first-layer-filters.png", first_conv_filters),
}


def model_figures(
    folder: str | Path,
    history: Sequence[Any],
    test_pixels: np.ndarray,
    test_labels: np.ndarray,
    probabilities: np.ndarray,
    first_layer: np.ndarray,
) -> list[tuple[str, Path]]:
    """Draw the MODEL_FIGURES of a trained network into `folder`; returns (caption, path) pairs.
    `probabilities` are the network's `(n, classes)` outputs on the test images; `first_layer`
    is its first layer's weights, drawn as neurons' weight tiles `(784, neurons)` (an MLP) or as
    filters `(k, k, 1, filters)` (a CNN)."""
    folder = Path(folder)
    predicted = probabilities.argmax(axis=1)
    test_accuracy = float(np.mean(predicted == test_labels))
    confusion = confusion_matrix(test_labels, predicted, probabilities.shape[1])
    if np.ndim(first_layer) not in FIRST_LAYER_FIGURES:
        raise ValueError(f"no picture for first-layer weights of shape {np.shape(first_layer)}")
    first_name, draw_first = FIRST_LAYER_FIGURES[np.ndim(first_layer)]
    drawn = {
        "training-curves.png": training_curves(
            history, folder / "training-curves.png", test_accuracy
        ),
        "confusion-matrix.png": confusion_heatmap(confusion, folder / "confusion-matrix.png"),
        "confident-mistakes.png": confident_mistakes(
            test_pixels, test_labels, probabilities, folder / "confident-mistakes.png"
        ),
        first_name: draw_first(first_layer, folder / first_name),
    }
    return [(MODEL_FIGURES[name], path) for name, path in drawn.items()]


def existing_figures(folder: str | Path) -> list[tuple[str, Path]]:
    """The MODEL_FIGURES present in `folder`, as (caption, path) pairs in page order."""
    folder = Path(folder)
    return [(caption, folder / n) for n, caption in MODEL_FIGURES.items() if (folder / n).is_file()]
