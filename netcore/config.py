"""Hyperparameters as dataclasses, saved as JSON next to the weights and loaded back exactly.

`NetworkConfig` is everything inference needs (architecture and input scaling); `TrainConfig` is
everything that shaped the weights. Both round-trip through `to_dict` / `from_dict`; unknown or
missing keys are refused, so a config file never silently means something else.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from netcore.errors import ModelFileError
from netcore.io import write_json


@dataclass
class NetworkConfig:
    # Width of every layer: input pixels, hidden layers..., classes.
    layer_sizes: list[int] = field(default_factory=lambda: [784, 128, 10])
    # Hidden-layer activation, a name in netcore.activations.ACTIVATIONS.
    activation: str = "relu"
    # Output loss, a name in netcore.losses.LOSSES.
    loss: str = "softmax_cross_entropy"
    # Input scaling: x = (pixel / 255 - pixel_mean) / pixel_std. Stored here so that inference
    # scales exactly as training did (defaults: the MNIST training set's mean and std).
    pixel_mean: float = 0.1307
    pixel_std: float = 0.3081

    def __post_init__(self) -> None:
        if len(self.layer_sizes) < 2 or any(int(n) < 1 for n in self.layer_sizes):
            raise ValueError(f"layer_sizes needs >= 2 positive sizes, got {self.layer_sizes}")
        if self.pixel_std <= 0:
            raise ValueError(f"pixel_std must be positive, got {self.pixel_std}")
        self.layer_sizes = [int(n) for n in self.layer_sizes]

    @property
    def num_classes(self) -> int:
        return self.layer_sizes[-1]

    @property
    def input_size(self) -> int:
        return self.layer_sizes[0]

    to_dict = dataclasses.asdict

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        return _from_dict(cls, values)


@dataclass
class TrainConfig:
    # Passes over the training set.
    epochs: int = 100
    # Examples per SGD step.
    batch_size: int = 128
    # Peak learning rate (reached after warmup, then shaped by `schedule`).
    learning_rate: float = 0.1
    # Learning-rate schedule, a name in netcore.schedules.SCHEDULES: constant, step or cosine.
    schedule: str = "cosine"
    # Epochs of linear warmup from 0 to `learning_rate` (any schedule).
    warmup_epochs: float = 0.0
    # For the step schedule: multiply the rate by `step_gamma` every `step_epochs` epochs.
    step_epochs: int = 10
    step_gamma: float = 0.1
    # SGD momentum coefficient; 0 gives plain SGD.
    momentum: float = 0.9
    # Nesterov momentum (look-ahead gradient) instead of heavy-ball momentum.
    nesterov: bool = False
    # L2 penalty on weights (not biases), added to the gradient: g + weight_decay * w.
    weight_decay: float = 2e-4
    # Label smoothing for the cross-entropy target (0 = one-hot).
    label_smoothing: float = 0.0
    # Augmentation: shift each training image by a random whole number of pixels in
    # [-max_shift, max_shift] along each axis, a fresh draw every epoch (0 turns it off).
    augment_shift: int = 1
    # Augmentation: this many copies of the training set, every image rotated, zoomed and sheared
    # by its own random small amount, are made once before training; each epoch draws every image
    # from the original or one of its copies (0 turns it off; each copy costs 47 MB and seconds
    # of CPU before the first epoch, docs/benchmarks.md).
    augment_distortions: int = 3
    # Largest rotation (degrees), relative zoom and horizontal shear factor, either way.
    distortion_degrees: float = 15.0
    distortion_scale: float = 0.15
    distortion_shear: float = 0.3
    # Fraction of the training set held out for validation (0 = none; no early stopping then).
    validation_fraction: float = 0.0
    # Stop after this many epochs without a better validation accuracy (0 = never stop early);
    # the best epoch's weights are kept.
    early_stopping_patience: int = 0
    # Seeds the initial weights, the validation split, the shuffles and the augmentation.
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "momentum": 0 <= self.momentum < 1,
            "weight_decay": self.weight_decay >= 0,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "augment_shift": 0 <= self.augment_shift <= 8,
            "augment_distortions": 0 <= self.augment_distortions <= 16,
            "distortion_degrees": 0 <= self.distortion_degrees <= 45,
            "distortion_scale": 0 <= self.distortion_scale < 0.5,
            "distortion_shear": 0 <= self.distortion_shear < 1,
            "validation_fraction": 0 <= self.validation_fraction < 1,
            "early_stopping_patience": self.early_stopping_patience >= 0,
            "warmup_epochs": self.warmup_epochs >= 0,
            "step_epochs": self.step_epochs >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"invalid training configuration: {shown}")

    to_dict = dataclasses.asdict

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        return _from_dict(cls, values)


def _from_dict(cls: type, values: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return cls(**values)


def save_config(path: str | Path, network: NetworkConfig, training: TrainConfig | None) -> None:
    """Write `{"network": ..., "training": ...}` as JSON, atomically."""
    write_json(path, {"network": network.to_dict(), "training": training and training.to_dict()})


def load_config(path: str | Path) -> tuple[NetworkConfig, TrainConfig | None]:
    """Read a file written by `save_config`; a malformed one raises ModelFileError naming it."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
        network = NetworkConfig.from_dict(document["network"])
        training = document.get("training")
        return network, training and TrainConfig.from_dict(training)
    except FileNotFoundError:
        raise ModelFileError(path, "config file not found") from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelFileError(path, f"not a valid model config ({error})") from None
