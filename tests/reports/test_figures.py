"""The figures: each is a real PNG of its fixed size, drawn from a small network trained for
real on a real MNIST subset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.reports import figures
from netcore.config import NetworkConfig, TrainConfig
from netcore.metrics import confusion_matrix
from netcore.mnist import read_parquet
from netcore.network import Network
from netcore.preprocess import normalize
from netcore.trainer import train


@pytest.fixture(scope="module")
def trained(small_mnist_dir: Path) -> dict:
    pixels, labels = read_parquet(small_mnist_dir / "train-00000-of-00001.parquet")
    test_pixels, test_labels = read_parquet(small_mnist_dir / "test-00000-of-00001.parquet")
    network = Network(NetworkConfig(), np.random.default_rng(0))
    config = TrainConfig(epochs=2, validation_fraction=0.1, augment_shift=0)
    result = train(network, pixels, labels, config)
    probabilities = network.predict_proba(normalize(test_pixels, network.config))
    return {
        "network": network,
        "history": result.history,
        "pixels": test_pixels,
        "labels": test_labels,
        "probabilities": probabilities,
    }


def assert_png(path: Path, size: tuple[int, int]) -> None:
    """A decodable PNG of exactly `size` that is not one flat colour."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == size
        image.load()
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 20


def test_training_curves(trained: dict, tmp_path: Path) -> None:
    path = figures.training_curves(trained["history"], tmp_path / "curves.png", 0.9)
    assert_png(path, figures.CURVES_SIZE)


def test_training_curves_from_json_dicts_without_validation(tmp_path: Path) -> None:
    history = [
        {"epoch": 1, "loss": 0.5, "train_accuracy": 0.8, "validation_accuracy": None},
        {"epoch": 2, "loss": 0.3, "train_accuracy": 0.9, "validation_accuracy": None},
    ]
    assert_png(figures.training_curves(history, tmp_path / "c.png"), figures.CURVES_SIZE)


def test_training_curves_refuses_empty_history(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one epoch"):
        figures.training_curves([], tmp_path / "c.png")


def test_confusion_heatmap(trained: dict, tmp_path: Path) -> None:
    predicted = trained["probabilities"].argmax(axis=1)
    confusion = confusion_matrix(trained["labels"], predicted, 10)
    path = figures.confusion_heatmap(confusion, tmp_path / "sub" / "confusion.png")
    assert_png(path, figures.CONFUSION_SIZE)


def test_most_confident_mistakes_are_wrong_and_sorted(trained: dict) -> None:
    labels, probabilities = trained["labels"], trained["probabilities"]
    chosen = figures.most_confident_mistakes(labels, probabilities, 24)
    assert len(chosen) == 24
    assert np.all(probabilities[chosen].argmax(axis=1) != labels[chosen])
    confidence = probabilities[chosen].max(axis=1)
    assert np.all(np.diff(confidence) <= 0)
    right = probabilities.argmax(axis=1) == labels
    wrong_confidence = probabilities[~right].max(axis=1)
    assert confidence[-1] >= np.sort(wrong_confidence)[-24]


def test_confident_mistakes(trained: dict, tmp_path: Path) -> None:
    path = figures.confident_mistakes(
        trained["pixels"], trained["labels"], trained["probabilities"], tmp_path / "m.png"
    )
    assert_png(path, figures.GRID_SIZE)


def test_confident_mistakes_when_there_are_none(trained: dict, tmp_path: Path) -> None:
    labels = trained["probabilities"].argmax(axis=1)
    path = figures.confident_mistakes(
        trained["pixels"], labels, trained["probabilities"], tmp_path / "m.png"
    )
    with Image.open(path) as image:
        assert image.size == figures.GRID_SIZE


def test_first_layer_weights_of_128_neurons(trained: dict, tmp_path: Path) -> None:
    weights = trained["network"].weights[0]
    assert weights.shape == (784, 128)
    path = figures.first_layer_weights(weights, tmp_path / "weights.png")
    assert figures.weights_grid_size(128) == (960, 560)
    assert_png(path, (960, 560))


def test_first_layer_weights_of_a_partial_last_row(tmp_path: Path) -> None:
    weights = np.random.default_rng(0).standard_normal((784, 20))
    path = figures.first_layer_weights(weights, tmp_path / "weights.png")
    assert_png(path, figures.weights_grid_size(20))
    with pytest.raises(ValueError, match="784"):
        figures.first_layer_weights(weights[:100], tmp_path / "bad.png")


def test_prediction_histograms(trained: dict, tmp_path: Path) -> None:
    probabilities = trained["probabilities"]
    classes = figures.class_histogram(probabilities.argmax(axis=1), tmp_path / "classes.png")
    confidence = figures.confidence_histogram(probabilities.max(axis=1), tmp_path / "conf.png")
    assert_png(classes, figures.HISTOGRAM_SIZE)
    assert_png(confidence, figures.HISTOGRAM_SIZE)


def test_image_grid_checks_its_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(2)]
    path = figures.image_grid(images, ["a", "b"], tmp_path / "g.png", title="two")
    assert_png(path, figures.GRID_SIZE)
    with pytest.raises(ValueError, match="captions"):
        figures.image_grid(images, ["a"], tmp_path / "g.png", title="two")
    with pytest.raises(ValueError, match="expected 28x28"):
        figures.image_grid([np.zeros((60, 20), np.uint8)], ["a"], tmp_path / "g.png", title="x")
    with pytest.raises(ValueError, match="at most 24"):
        figures.image_grid(images * 13, ["a", "b"] * 13, tmp_path / "g.png", title="x")


def test_image_grid_draws_ink_dark_on_paper(tmp_path: Path) -> None:
    ink = np.zeros((28, 28), np.uint8)
    ink[4:24, 12:16] = 255  # a bright stroke, as MNIST stores ink
    path = figures.image_grid([ink], ["one"], tmp_path / "g.png", title="ink")
    with Image.open(path) as image:
        gray = np.asarray(image.convert("L"))
    height = figures.GRID_SIZE[1]
    cell = (height - figures.GRID_HEADER) // figures.GRID_ROWS
    top = height - (height - figures.GRID_HEADER - cell) - figures.GRID_TILE  # first tile's top
    left = (figures.GRID_SIZE[0] // figures.GRID_COLUMNS - figures.GRID_TILE) // 2
    tile = gray[top : top + figures.GRID_TILE, left : left + figures.GRID_TILE]
    scale = figures.GRID_TILE // 28
    assert tile[14 * scale, 14 * scale] < 30  # the stroke: dark
    assert tile[2 * scale, 2 * scale] > 225  # the background: white paper


def evaluation(trained: dict) -> tuple:
    """What model_figures draws from besides the first layer: history, test set, probabilities."""
    return trained["history"], trained["pixels"], trained["labels"], trained["probabilities"]


def test_model_figures_draws_the_version_set(trained: dict, tmp_path: Path) -> None:
    first_layer = trained["network"].weights[0]
    drawn = figures.model_figures(tmp_path / "figures", *evaluation(trained), first_layer)
    # An MLP's set: every MODEL_FIGURES picture but a CNN's filters.
    mlp_set = [name for name in figures.MODEL_FIGURES if name != "first-layer-filters.png"]
    assert [caption for caption, _ in drawn] == [figures.MODEL_FIGURES[n] for n in mlp_set]
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(mlp_set)
    sizes = [figures.CURVES_SIZE, figures.CONFUSION_SIZE, figures.GRID_SIZE, (960, 560)]
    for (_, path), size in zip(drawn, sizes, strict=True):
        assert_png(path, size)
    assert figures.existing_figures(tmp_path / "figures") == drawn
    (tmp_path / "figures" / "confusion-matrix.png").unlink()
    assert len(figures.existing_figures(tmp_path / "figures")) == 3


def test_first_conv_filters_draws_each_filter_where_its_weights_are(tmp_path: Path) -> None:
    filters = np.zeros((5, 5, 1, 16))
    filters[0, 0, 0, 0] = 1.0  # filter 0: excited by ink at its top-left corner only
    filters[4, 4, 0, 1] = -1.0  # filter 1: inhibited at its bottom-right corner
    filters[..., 2:] = np.random.default_rng(0).standard_normal((5, 5, 1, 14))
    path = figures.first_conv_filters(filters, tmp_path / "filters.png")
    assert figures.filters_grid_size(16) == (960, 320)  # two rows of eight
    assert_png(path, (960, 320))
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    # Each 5x5 filter is enlarged 11 times into its mosaic cell of FILTER_TILE // 2 = 60 values,
    # two screen pixels per value: a filter weight is a 22x22 pixel square.
    top = figures.WEIGHT_HEADER

    def colour(filter_index: int, row: int, column: int) -> np.ndarray:
        left = filter_index * figures.FILTER_TILE
        return rgb[top + row * 22 + 11, left + column * 22 + 11]

    red, green, blue = colour(0, 0, 0)
    assert red > 100 and blue < 60 and green < 60  # strongly positive: red
    red, green, blue = colour(1, 4, 4)
    assert blue > 60 and red < 30  # strongly negative: blue
    assert (colour(0, 2, 2) > 240).all()  # zero: white
    with pytest.raises(ValueError, match="k, k, channels, filters"):
        figures.first_conv_filters(filters[0], tmp_path / "bad.png")


def test_model_figures_of_a_cnn_show_its_filters(trained: dict, tmp_path: Path) -> None:
    cnn = Network(NetworkConfig.cnn(), np.random.default_rng(0))
    drawn = figures.model_figures(tmp_path / "figures", *evaluation(trained), cnn.weights[0])
    cnn_set = [name for name in figures.MODEL_FIGURES if name != "first-layer-weights.png"]
    assert [caption for caption, _ in drawn] == [figures.MODEL_FIGURES[n] for n in cnn_set]
    assert_png(drawn[-1][1], figures.filters_grid_size(16))
    assert figures.existing_figures(tmp_path / "figures") == drawn
