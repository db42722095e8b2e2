"""Hyperparameters as dataclasses, saved as JSON next to the weights and loaded back exactly.

`NetworkConfig` is everything inference needs (architecture and input scaling); `TrainConfig` is
everything that shaped the weights. Both round-trip through `to_dict` / `from_dict`, which refuse
unknown keys and any value of the wrong type (an int may stand for a float; a bool is no number;
numbers must be finite), and both check their values' ranges and names on construction, so a
config file never silently means something else. `load_config` also refuses a network whose
fields are not all in the file (a field left out would silently take its default).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from netcore.activations import get_activation
from netcore.errors import ModelFileError
from netcore.io import write_json
from netcore.layers import build_layers
from netcore.losses import get_loss
from netcore.schedules import SCHEDULES

# The CNN recipe's layers (`NetworkConfig.cnn()`, `digitflow train --arch cnn`), chosen from
# the measurements in docs/cnn-recipe-notes.md. The 2x2 max-pool comes before the ReLU: max and
# ReLU commute (both are monotonic), and the ReLU then touches a quarter of the values.
CNN_LAYERS: list[dict[str, Any]] = [
    {"type": "conv2d", "filters": 16, "kernel": 5, "padding": "valid"},
    {"type": "maxpool2d"},
    {"type": "relu"},
    {"type": "conv2d", "filters": 32, "kernel": 5, "padding": "valid"},
    {"type": "maxpool2d"},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "dense", "units": 128},
    {"type": "relu"},
    {"type": "dense", "units": 10},
]


@dataclass
class NetworkConfig:
    """A network in one of two forms, written to config.json with only that form's fields:

    - an MLP (`layer_sizes` + `activation`; the default 784-128-10 relu), the form every model
      before the CNN was saved in;
    - a list of layer specs (`layers` + `input_shape`), any network `netcore.layers` can build,
      e.g. the CNN recipe (`NetworkConfig.cnn()`).

    Both are validated on construction (and so on load): a spec with an unknown type or key, a
    non-positive size or a shape that does not fit is refused with a ValueError.
    """

    # The MLP form: width of every layer, input pixels, hidden layers..., classes
    # (default [784, 128, 10]). None in the layers form.
    layer_sizes: list[int] | None = None
    # The MLP form: hidden-layer activation, a name in netcore.activations.ACTIVATIONS
    # (default "relu"). None in the layers form, whose specs name their activations.
    activation: str | None = None
    # Output loss, a name in netcore.losses.LOSSES.
    loss: str = "softmax_cross_entropy"
    # Input scaling: x = (pixel / 255 - pixel_mean) / pixel_std. Stored here so that inference
    # scales exactly as training did (defaults: the MNIST training set's mean and std).
    pixel_mean: float = 0.1307
    pixel_std: float = 0.3081
    # The layers form: the layer specs in order (see netcore.layers), e.g.
    # {"type": "conv2d", "filters": 16, "kernel": 5, "padding": "same"}. None in the MLP form.
    layers: list[dict[str, Any]] | None = None
    # The layers form: one example's shape; inputs still arrive flat `(n, 784)` and are viewed as
    # `(n, 28, 28, 1)` (height, width, channels last). Default [28, 28, 1]; None in the MLP form.
    input_shape: list[int] | None = None

    def __post_init__(self) -> None:
        if self.layers is None:
            if self.input_shape is not None:
                raise ValueError("input_shape belongs to the layers form; the MLP has layer_sizes")
            if self.layer_sizes is None:
                self.layer_sizes = [784, 128, 10]
            if self.activation is None:
                self.activation = "relu"
            if len(self.layer_sizes) < 2 or any(int(n) < 1 for n in self.layer_sizes):
                raise ValueError(f"layer_sizes needs >= 2 positive sizes, got {self.layer_sizes}")
            self.layer_sizes = [int(n) for n in self.layer_sizes]
            get_activation(self.activation)
        else:
            if self.layer_sizes is not None or self.activation is not None:
                raise ValueError(
                    "give either layer_sizes (+ activation) or layers, not both: "
                    "the layer specs name their own activations"
                )
            if self.input_shape is None:
                self.input_shape = [28, 28, 1]
            if len(self.input_shape) not in (1, 3) or any(
                not isinstance(n, int) or n < 1 for n in self.input_shape
            ):
                raise ValueError(
                    f"input_shape must be [features] or [height, width, channels], "
                    f"got {self.input_shape}"
                )
            self.layers = list(self.layers)
            build_layers(self.layers, tuple(self.input_shape))  # validates, raises ValueError
        get_loss(self.loss)
        # The mean and std of pixels scaled to [0, 1]: the mean lies in [0, 1] and the std in
        # (0, 0.5]; NaN fails both comparisons.
        if not 0 <= self.pixel_mean <= 1:
            raise ValueError(f"pixel_mean must be a number in [0, 1], got {self.pixel_mean}")
        if not 0 < self.pixel_std <= 0.5:
            raise ValueError(f"pixel_std must be a number in (0, 0.5], got {self.pixel_std}")

    @classmethod
    def mlp(
        cls,
        hidden: list[int] | tuple[int, ...] = (128,),
        activation: str = "relu",
        pixel_mean: float = 0.1307,
        pixel_std: float = 0.3081,
    ) -> Self:
        """A fully connected network 784-hidden...-10 (the default: 784-128-10 relu)."""
        return cls(
            layer_sizes=[784, *hidden, 10],
            activation=activation,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
        )

    @classmethod
    def cnn(cls, pixel_mean: float = 0.1307, pixel_std: float = 0.3081) -> Self:
        """The CNN recipe (CNN_LAYERS) on 28x28 grayscale images."""
        return cls(layers=copy.deepcopy(CNN_LAYERS), pixel_mean=pixel_mean, pixel_std=pixel_std)

    def layer_specs(self) -> list[dict[str, Any]]:
        """The network as layer specs, in either form: the MLP is dense, activation, ..., dense."""
        if self.layers is not None:
            return copy.deepcopy(self.layers)
        specs: list[dict[str, Any]] = []
        for units in self.layer_sizes[1:-1]:
            specs += [{"type": "dense", "units": units}, {"type": self.activation}]
        return [*specs, {"type": "dense", "units": self.layer_sizes[-1]}]

    @property
    def example_shape(self) -> tuple[int, ...]:
        """One input example's shape as the first layer sees it: (784,) or e.g. (28, 28, 1)."""
        if self.layers is None:
            return (self.layer_sizes[0],)
        return tuple(self.input_shape)

    @property
    def arch(self) -> str:
        """ "cnn" for a network with a convolution, else "mlp"."""
        return "cnn" if any(s["type"] == "conv2d" for s in self.layer_specs()) else "mlp"

    @property
    def num_classes(self) -> int:
        return self.layer_sizes[-1] if self.layers is None else self._output_size()

    @property
    def input_size(self) -> int:
        """Values per example: inputs arrive flat, `(n, input_size)`."""
        return math.prod(self.example_shape)

    def _output_size(self) -> int:
        return build_layers(self.layers, self.example_shape)[-1].output_shape[0]

    def num_params(self) -> int:
        """Trainable values: every weight and bias."""
        layers = build_layers(self.layer_specs(), self.example_shape)
        return sum(math.prod(s) for layer in layers for s in layer.param_shapes.values())

    def flops_per_image(self) -> int:
        """Floating-point operations of one forward pass, counting each multiply-add of the
        dense and convolution layers as 2 (pooling, activations and biases left out). Training
        costs about three times this: the forward pass, the weight gradients and the input
        gradients (all but the first layer's) are each one such pass."""
        layers = build_layers(self.layer_specs(), self.example_shape)
        return sum(layer.flops_per_example() for layer in layers)

    def describe(self) -> str:
        """For humans: "784-128-10 relu", "conv5x5x16same-pool-conv5x5x32same-pool-dense128-10"."""
        if self.layers is None:
            return f"{'-'.join(map(str, self.layer_sizes))} {self.activation}"
        parts = []
        for index, spec in enumerate(self.layers):
            kind = spec["type"]
            if kind == "conv2d":
                k, padding = spec["kernel"], "same" if spec["padding"] == "same" else ""
                parts.append(f"conv{k}x{k}x{spec['filters']}{padding}")
            elif kind == "maxpool2d":
                parts.append("pool")
            elif kind == "dense":
                last = index == len(self.layers) - 1
                parts.append(f"{'' if last else 'dense'}{spec['units']}")
            elif kind == "dropout":
                parts.append(f"dropout{spec['rate']:g}")
            elif kind not in ("flatten", "relu"):
                parts.append(kind)
        return "-".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The fields of this config's form (the MLP's dict is exactly what it always was)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

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
    # Learning-rate schedule, a name in netcore.schedules.SCHEDULES: constant, step, cosine or
    # onecycle.
    schedule: str = "cosine"
    # Epochs of warmup up to `learning_rate` (any schedule): linear from 0, or for onecycle along
    # half a cosine from learning_rate / 25.
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
    # Augmentation: in the distorted copies, each image's strokes also get thinner or thicker by
    # a random amount up to this, as a fraction of one grayscale erosion / dilation step (about a
    # pixel on each side of a stroke; netcore.augment.change_stroke_width). 0 turns it off.
    stroke_width: float = 0.0
    # Fraction of the training set held out for validation (0 = none; no early stopping then).
    validation_fraction: float = 0.0
    # Stop after this many epochs without a better validation accuracy (0 = never stop early);
    # the best epoch's weights are kept.
    early_stopping_patience: int = 0
    # Seeds the initial weights, the validation split, the shuffles and the augmentation.
    seed: int = 0
    # Threads that each train on a part of every batch (netcore.parallel: data parallel, their
    # gradients summed). Above 1, run with one BLAS thread (OPENBLAS_NUM_THREADS=1): the threads
    # are the parallelism. The weights differ from a 1-thread run in the last bits only.
    threads: int = 1

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
            "stroke_width": 0 <= self.stroke_width <= 1,
            "validation_fraction": 0 <= self.validation_fraction < 1,
            "early_stopping_patience": self.early_stopping_patience >= 0,
            "warmup_epochs": self.warmup_epochs >= 0,
            "step_epochs": self.step_epochs >= 1,
            "threads": 1 <= self.threads <= 64,
            "schedule": self.schedule in SCHEDULES,
            # NaN fails every comparison above; these have no range of their own.
            "step_gamma": math.isfinite(self.step_gamma),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(f"invalid training configuration: {shown}")

    to_dict = dataclasses.asdict

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        return _from_dict(cls, values)

    @classmethod
    def cnn(cls, **changes: Any) -> Self:
        """The CNN recipe's training (CNN_TRAINING), with any fields changed."""
        return cls(**{**CNN_TRAINING, **changes})


# The CNN recipe's training: the TrainConfig fields that differ from the MLP's defaults, chosen
# from the measurements in docs/cnn-recipe-notes.md. Thinner and thicker strokes cost ~0.04% on
# MNIST's test set and gain ~0.5% on digits from outside MNIST (scans most); two threads, each
# with a single-threaded BLAS, use both cores of the 2-core machine.
CNN_TRAINING: dict[str, Any] = {
    "epochs": 12,
    "learning_rate": 0.05,
    "schedule": "onecycle",
    "warmup_epochs": 3.6,
    "nesterov": True,
    "weight_decay": 5e-4,
    "stroke_width": 0.5,
    "threads": 2,
}

# What `--arch` names: the network and training recipe of each architecture.
ARCHS = ("mlp", "cnn")


def recipe(
    arch: str, pixel_mean: float = 0.1307, pixel_std: float = 0.3081
) -> tuple[NetworkConfig, TrainConfig]:
    """The network and training configuration of a named architecture ("mlp", the default
    784-128-10, or "cnn"), with the given input scaling."""
    if arch == "mlp":
        return NetworkConfig.mlp(pixel_mean=pixel_mean, pixel_std=pixel_std), TrainConfig()
    if arch == "cnn":
        return NetworkConfig.cnn(pixel_mean=pixel_mean, pixel_std=pixel_std), TrainConfig.cnn()
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")


def _from_dict(cls: type, values: dict[str, Any]) -> Any:
    """`cls(**values)` for a dict read from a file: unknown fields and values of the wrong type
    are refused with a ValueError naming the field."""
    if not isinstance(values, dict):
        raise ValueError(f"a {cls.__name__} must be an object of fields, got {values!r}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    for name, value in values.items():
        if not _fits(value, hints[name]):
            raise ValueError(f"{name} must be {_describe(hints[name])}, got {value!r}")
    return cls(**values)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a value read from JSON or TOML has the type `hint` (a field's annotation)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        return numeric and math.isfinite(value)
    if origin is list:
        return isinstance(value, list) and all(_fits(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict)  # layer specs: netcore.layers checks their contents
    if hint is Any:
        return True
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    """A field's type in words, e.g. "int", "float (finite)", "list of int or null"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(arg) for arg in args)
    if hint is type(None):
        return "null"
    if hint is float:
        return "float (finite)"
    if origin is list:
        return f"list of {_describe(args[0])}"
    if origin is dict:
        return "object"
    return getattr(hint, "__name__", str(hint))


def save_config(path: str | Path, network: NetworkConfig, training: TrainConfig | None) -> None:
    """Write `{"network": ..., "training": ...}` as JSON, atomically."""
    write_json(path, {"network": network.to_dict(), "training": training and training.to_dict()})


def load_config(path: str | Path) -> tuple[NetworkConfig, TrainConfig | None]:
    """Read a file written by `save_config`; anything else raises ModelFileError naming the
    file and the section and field that is wrong."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(path, "config file not found") from None
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError among them
        raise ModelFileError(path, f"not a valid model config ({error})") from None
    if not isinstance(document, dict) or "network" not in document:
        raise ModelFileError(path, "not a valid model config (no 'network' section)")
    section = "network"
    try:
        network = NetworkConfig.from_dict(document["network"])
        # A field left out, or null, would take its default: the file would not say it.
        missing = [name for name in network.to_dict() if document["network"].get(name) is None]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        section = "training"
        training = document.get("training")
        return network, None if training is None else TrainConfig.from_dict(training)
    except (ValueError, TypeError) as error:
        raise ModelFileError(path, f"not a valid model config ({section}: {error})") from None
