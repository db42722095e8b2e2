"""Accuracy on the full real MNIST: what `digitflow train` does with no options must hold up,
and so must the CNN recipe (`--arch cnn`).

Slow (about a minute each, a few for the CNN): `make test-all`, or CI. The timing targets live in
`make bench`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netcore import Network, NetworkConfig, TrainConfig, train
from netcore.config import recipe
from netcore.metrics import accuracy
from netcore.mnist import read_parquet
from netcore.preprocess import normalize, pixel_statistics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mnist(mnist_dir: Path):
    train_set = read_parquet(mnist_dir / "train-00000-of-00001.parquet", expected_rows=60000)
    test_set = read_parquet(mnist_dir / "test-00000-of-00001.parquet", expected_rows=10000)
    return train_set, test_set


def _test_accuracy(mnist, config: TrainConfig) -> float:
    (pixels, labels), (test_pixels, test_labels) = mnist
    mean, std = pixel_statistics(pixels)
    net = Network(NetworkConfig(pixel_mean=mean, pixel_std=std), np.random.default_rng(config.seed))
    train(net, pixels, labels, config)
    return accuracy(test_labels, net.predict(normalize(test_pixels, net.config)))


def test_default_configuration_reaches_98_5_percent(mnist):
    assert _test_accuracy(mnist, TrainConfig()) >= 0.985


def test_without_augmentation_reaches_98_3_percent(mnist):
    config = TrainConfig(augment_shift=0, augment_distortions=0)
    assert _test_accuracy(mnist, config) >= 0.983


def test_cnn_recipe_reaches_99_3_percent(mnist):
    (pixels, labels), (test_pixels, test_labels) = mnist
    network_config, config = recipe("cnn", *pixel_statistics(pixels))
    net = Network(network_config, np.random.default_rng(config.seed))
    train(net, pixels, labels, config)
    assert accuracy(test_labels, net.predict(normalize(test_pixels, net.config))) >= 0.993
