"""The training loop on real MNIST rows: reproducibility, resume, early stopping, divergence."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest

from netcore import Network, NetworkConfig, TrainConfig, TrainingDiverged, save_model, train
from netcore.augment import EpochBuilder, change_stroke_width, distorted_copy
from netcore.errors import ModelFileError
from netcore.mnist import read_parquet
from netcore.schedules import learning_rate


@pytest.fixture(scope="module")
def small_train(small_mnist_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return read_parquet(small_mnist_dir / "train-00000-of-00001.parquet")


def _fit(pixels, labels, config, **kwargs) -> tuple[Network, object]:
    net = Network(NetworkConfig(layer_sizes=[784, 32, 10]), np.random.default_rng(config.seed))
    result = train(net, pixels, labels, config, **kwargs)
    return net, result


def _weights_sha256(net: Network, folder: Path) -> str:
    save_model(net, folder)
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_same_seed_gives_bit_identical_weight_files(small_train, tmp_path):
    config = TrainConfig(epochs=2, augment_shift=2, augment_distortions=1, seed=7)
    a, _ = _fit(*small_train, config)
    b, _ = _fit(*small_train, config)
    c, _ = _fit(*small_train, TrainConfig(epochs=2, augment_shift=2, augment_distortions=1, seed=8))
    assert _weights_sha256(a, tmp_path / "a") == _weights_sha256(b, tmp_path / "b")
    assert _weights_sha256(a, tmp_path / "a") != _weights_sha256(c, tmp_path / "c")


class Crash(Exception):
    """Stands for a process dying after an epoch's checkpoint was written."""


def _crash_then_resume(fit, small_train, config, checkpoint: Path) -> tuple[Network, object]:
    """Train with `fit` until the end of epoch 2, crash, then train again from the checkpoint."""

    def crash_after_two(stats):
        if stats.epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        fit(*small_train, config, on_epoch=crash_after_two, checkpoint_path=checkpoint)
    return fit(*small_train, config, checkpoint_path=checkpoint)


def test_resume_from_checkpoint_matches_uninterrupted_run(small_train, tmp_path):
    config = TrainConfig(epochs=4, augment_shift=1, validation_fraction=0.1, seed=3)
    uninterrupted, full = _fit(*small_train, config)
    resumed, result = _crash_then_resume(
        _fit, small_train, config, tmp_path / "checkpoint.safetensors"
    )

    assert result.resumed_from_epoch == 2
    assert [h.epoch for h in result.history] == [1, 2, 3, 4]
    assert [h.loss for h in result.history] == [h.loss for h in full.history]
    resumed_sha = _weights_sha256(resumed, tmp_path / "r")
    assert resumed_sha == _weights_sha256(uninterrupted, tmp_path / "u")


def test_checkpoint_from_another_configuration_is_refused(small_train, tmp_path):
    checkpoint = tmp_path / "checkpoint.safetensors"
    _fit(*small_train, TrainConfig(epochs=1), checkpoint_path=checkpoint)
    with pytest.raises(ModelFileError, match="different configuration"):
        _fit(*small_train, TrainConfig(epochs=1, seed=99), checkpoint_path=checkpoint)


def test_training_learns_and_reports_every_epoch(small_train):
    seen = []
    _fit(*small_train, TrainConfig(epochs=3, validation_fraction=0.2), on_epoch=seen.append)
    assert [s.epoch for s in seen] == [1, 2, 3]
    assert seen[-1].loss < seen[0].loss
    assert seen[-1].validation_accuracy > 0.8
    assert seen[-1].validation_loss < seen[0].validation_loss
    assert all(s.seconds > 0 and 0 <= s.train_accuracy <= 1 for s in seen)


def test_early_stopping_keeps_the_best_epoch(small_train):
    # A large constant rate makes validation accuracy stop improving after a few epochs.
    config = TrainConfig(
        epochs=30,
        learning_rate=0.5,
        schedule="constant",
        validation_fraction=0.2,
        early_stopping_patience=2,
    )
    _, result = _fit(*small_train, config)
    accuracies = [h.validation_accuracy for h in result.history]
    assert result.stopped_early and len(result.history) < 30
    assert result.best_epoch == 1 + int(np.argmax(accuracies))
    assert all(a < accuracies[result.best_epoch - 1] for a in accuracies[result.best_epoch :])


def test_divergence_stops_with_a_clear_error(small_train):
    with pytest.raises(TrainingDiverged, match=r"epoch 1.*lower learning rate"):
        _fit(*small_train, TrainConfig(epochs=2, learning_rate=1e4, schedule="constant"))


def test_shifted_epochs_move_each_image_whole():
    rng = np.random.default_rng(0)
    pixels = np.zeros((50, 28, 28), dtype=np.uint8)
    pixels[:, 10:18, 12:16] = rng.integers(1, 255, (50, 8, 4))
    order = rng.permutation(50)
    out = EpochBuilder(pixels, max_shift=2).build(order, rng).reshape(50, 28, 28)
    for row, source in enumerate(order):
        ys, xs = np.nonzero(out[row])
        dy, dx = ys.min() - 10, xs.min() - 12
        assert abs(dy) <= 2 and abs(dx) <= 2
        np.testing.assert_array_equal(np.roll(pixels[source], (dy, dx), axis=(0, 1)), out[row])
    unshifted = EpochBuilder(pixels, max_shift=0).build(order, rng).reshape(50, 28, 28)
    np.testing.assert_array_equal(unshifted, pixels[order])


def test_epochs_draw_each_image_from_the_original_or_its_copies():
    pixels = np.arange(1, 31, dtype=np.uint8)[:, None].repeat(784, axis=1)  # image i is all i+1
    copies = [pixels + 100, pixels + 200]
    rng = np.random.default_rng(0)
    order = rng.permutation(30)
    seen = set()
    for _ in range(20):
        out = EpochBuilder(pixels, max_shift=0, copies=copies).build(order, rng)
        values = out[:, 0]
        assert np.array_equal(values % 100, pixels[order, 0])  # the right image, some variant
        seen |= set((values // 100).tolist())
    assert seen == {0, 1, 2}


def test_distortions_are_small_reproducible_and_identity_when_zero(small_train):
    images = small_train[0][:300]
    same = distorted_copy(images, np.random.default_rng(0), 0.0, 0.0, 0.0)
    np.testing.assert_array_equal(same, images)
    a = distorted_copy(images, np.random.default_rng(5), 10.0, 0.1, 0.2, threads=1)
    b = distorted_copy(images, np.random.default_rng(5), 10.0, 0.1, 0.2, threads=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, images)
    # Small distortions move ink a little and keep about as much of it.
    ink_ratio = a.reshape(300, -1).sum(axis=1) / images.reshape(300, -1).sum(axis=1)
    assert ink_ratio.min() > 0.75 and ink_ratio.max() < 1.3
    overlap = (a > 127) & (images > 127)
    assert overlap.sum() / (images > 127).sum() > 0.5


@pytest.mark.parametrize(
    ("schedule", "epoch", "expected"),
    [
        ("constant", 7.5, 0.1),
        ("step", 9.99, 0.1),
        ("step", 10.0, 0.01),
        ("step", 25.0, 0.001),
        ("cosine", 0.0, 0.1),
        ("cosine", 15.0, 0.05),
        ("cosine", 30.0, 0.0),
    ],
)
def test_learning_rate_schedules(schedule, epoch, expected):
    config = TrainConfig(epochs=30, learning_rate=0.1, schedule=schedule, step_epochs=10)
    assert learning_rate(epoch, config) == pytest.approx(expected, abs=1e-12)


def test_warmup_ramps_linearly_then_follows_cosine():
    config = TrainConfig(epochs=12, learning_rate=0.2, schedule="cosine", warmup_epochs=2)
    assert learning_rate(0.0, config) == 0.0
    assert learning_rate(1.0, config) == pytest.approx(0.1)
    assert learning_rate(2.0, config) == pytest.approx(0.2)
    assert learning_rate(7.0, config) == pytest.approx(0.1)


# A small CNN with every layer type, quick enough on the 2,000-image subset.
SMALL_CNN = [
    {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"},
    {"type": "maxpool2d"},
    {"type": "relu"},
    {"type": "conv2d", "filters": 8, "kernel": 3, "padding": "valid"},
    {"type": "maxpool2d"},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "dense", "units": 32},
    {"type": "relu"},
    {"type": "dropout", "rate": 0.25},
    {"type": "dense", "units": 10},
]


def _fit_cnn(pixels, labels, config, **kwargs) -> tuple[Network, object]:
    net = Network(NetworkConfig(layers=SMALL_CNN), np.random.default_rng(config.seed))
    return net, train(net, pixels, labels, config, **kwargs)


def _cnn_config(**changes) -> TrainConfig:
    values = {
        "epochs": 3,
        "learning_rate": 0.05,
        "nesterov": True,
        "schedule": "onecycle",
        "warmup_epochs": 1,
        "augment_distortions": 1,
        "stroke_width": 0.5,
        "seed": 7,
    }
    return TrainConfig(**{**values, **changes})


@pytest.mark.parametrize("threads", [1, 2])
def test_cnn_same_seed_gives_bit_identical_weight_files(small_train, tmp_path, threads):
    a, _ = _fit_cnn(*small_train, _cnn_config(threads=threads))
    b, _ = _fit_cnn(*small_train, _cnn_config(threads=threads))
    c, _ = _fit_cnn(*small_train, _cnn_config(seed=8, threads=threads))
    assert _weights_sha256(a, tmp_path / "a") == _weights_sha256(b, tmp_path / "b")
    assert _weights_sha256(a, tmp_path / "a") != _weights_sha256(c, tmp_path / "c")


@pytest.mark.parametrize("threads", [1, 2])
def test_cnn_resume_from_checkpoint_matches_uninterrupted_run(small_train, tmp_path, threads):
    config = _cnn_config(epochs=4, validation_fraction=0.1, threads=threads)
    uninterrupted, full = _fit_cnn(*small_train, config)
    resumed, result = _crash_then_resume(
        _fit_cnn, small_train, config, tmp_path / "checkpoint.safetensors"
    )

    assert result.resumed_from_epoch == 2
    assert [h.loss for h in result.history] == [h.loss for h in full.history]
    resumed_sha = _weights_sha256(resumed, tmp_path / "r")
    assert resumed_sha == _weights_sha256(uninterrupted, tmp_path / "u")


def test_cnn_learns(small_train):
    seen = []
    _fit_cnn(*small_train, _cnn_config(epochs=5, validation_fraction=0.2), on_epoch=seen.append)
    assert seen[-1].loss < seen[0].loss
    assert seen[-1].validation_accuracy > 0.85


def test_onecycle_rises_along_a_cosine_from_a_25th_then_anneals():
    config = TrainConfig(epochs=10, learning_rate=0.1, schedule="onecycle", warmup_epochs=3)
    assert learning_rate(0.0, config) == pytest.approx(0.004)
    assert learning_rate(1.5, config) == pytest.approx(0.004 + 0.096 / 2)
    assert learning_rate(3.0, config) == pytest.approx(0.1)
    assert learning_rate(6.5, config) == pytest.approx(0.05)
    assert learning_rate(10.0, config) == pytest.approx(0.0, abs=1e-12)
    rates = [learning_rate(e / 10, config) for e in range(101)]
    peak = rates.index(max(rates))
    assert all(a <= b for a, b in itertools.pairwise(rates[: peak + 1]))
    assert all(a >= b for a, b in itertools.pairwise(rates[peak:]))


def test_stroke_width_changes_by_hand():
    image = np.zeros((1, 7, 7), np.uint8)
    image[0, 1:6, 3] = 200  # a vertical stroke one pixel wide
    thick = change_stroke_width(image, np.array([1.0]))[0]
    np.testing.assert_array_equal(thick[1:6, 2:5], 200)  # three pixels wide now
    assert thick[0, 3] == thick[6, 3] == 200  # and a pixel longer at each end
    assert thick.sum() == 200 * (5 * 3 + 2)
    bar = np.zeros((1, 7, 7), np.uint8)
    bar[0, 1:6, 2:5] = 100  # a bar three pixels wide
    thin = change_stroke_width(bar, np.array([-1.0]))[0]
    assert thin.sum() == 100 * 3 and thin[2:5, 3].tolist() == [100, 100, 100]
    half = change_stroke_width(image, np.array([0.5]))[0]
    assert half[3, 2] == 100 and half[3, 3] == 200  # edges halfway, the stroke unchanged
    np.testing.assert_array_equal(change_stroke_width(image, np.array([0.0])), image)


def test_stroke_width_augmentation_keeps_geometry_and_is_reproducible(small_train):
    images = small_train[0][:400]
    plain = distorted_copy(images, np.random.default_rng(5), 10.0, 0.1, 0.2)
    barely = distorted_copy(images, np.random.default_rng(5), 10.0, 0.1, 0.2, max_stroke=1e-9)
    np.testing.assert_array_equal(plain, barely)  # the stroke draws come after the geometry
    a = distorted_copy(images, np.random.default_rng(5), 10.0, 0.1, 0.2, 1, max_stroke=0.8)
    b = distorted_copy(images, np.random.default_rng(5), 10.0, 0.1, 0.2, 2, max_stroke=0.8)
    np.testing.assert_array_equal(a, b)
    ink_change = a.reshape(400, -1).sum(axis=1) / plain.reshape(400, -1).sum(axis=1)
    assert ink_change.min() < 0.8 and ink_change.max() > 1.3  # both thinner and thicker
    assert np.mean(ink_change > 1) == pytest.approx(0.5, abs=0.1)


def test_cnn_divergence_in_two_threads_stops_with_a_clear_error(small_train):
    with pytest.raises(TrainingDiverged, match=r"epoch 1.*lower learning rate"):
        _fit_cnn(*small_train, _cnn_config(learning_rate=1e5, schedule="constant", threads=2))
