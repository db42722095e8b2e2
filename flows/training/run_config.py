"""What one training run uses, from command-line flags, the environment, a TOML file and defaults.

Precedence: flags, then the environment (DIGITFLOW_MNIST_SOURCE, DIGITFLOW_HOME for the default
registry), then the TOML file, then the defaults. The TOML file (all sections optional):

    [data]
    source = "/path/to/mnist"   # Hub id, folder or fsspec URL
    revision = "main"           # Hub sources only
    train_rows = 60000          # expected row counts; 0 accepts any
    test_rows = 10000

    [network]
    arch = "mlp"                # mlp (the default) or cnn: netcore.config.recipe(arch)
    hidden = [128]              # the MLP's hidden layer widths
    activation = "relu"         # the MLP's hidden activation: relu or tanh

    [training]                  # any netcore TrainConfig field, over the arch's recipe
    epochs = 20
    seed = 1

    [publish]
    min_accuracy = 0.97
    registry = "data/models"    # or any fsspec URL
    promote = "if-not-worse"    # never, if-better, if-not-worse or always: when production moves

    run = resolve_run_config({"epochs": 5}, "train.toml")
    training_flow(**run.flow_parameters())

The architecture picks the recipe: the network and the TrainConfig that the [training] section
and the flags change (`--arch cnn --epochs 3` is 3 epochs of the CNN recipe). The CNN has its own
layers, so hidden widths or an activation with it are refused. DIGITFLOW_BLAS_THREADS, for the
CNN, is the number of threads training splits each batch across (TrainConfig.threads, each with
one BLAS thread: flows/training/train.py holds BLAS at one thread while they run); for the MLP it
stays OpenBLAS's own thread count (flows/cli/main.py).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.paths import default_registry
from flows.registry.promotion import DEFAULT_POLICY, POLICIES
from flows.training.download import FULL_MNIST_ROWS, mnist_source
from netcore.config import ARCHS, NetworkConfig, TrainConfig, recipe
from netcore.errors import NetcoreError

DEFAULT_MIN_ACCURACY = 0.97
DEFAULT_ARCH = "mlp"
THREADS_ENV = "DIGITFLOW_BLAS_THREADS"
SECTIONS = {
    "data": {"source", "revision", "train_rows", "test_rows"},
    "network": {"arch", "hidden", "activation"},
    "training": {f.name for f in dataclasses.fields(TrainConfig)},
    "publish": {"min_accuracy", "registry", "promote"},
}
# Flags that set a TrainConfig field, by flag name.
TRAINING_FLAGS = ("epochs", "seed", "batch_size", "learning_rate")


class ConfigError(NetcoreError):
    """A configuration file or value that cannot be used."""


def default_hidden() -> list[int]:
    return NetworkConfig().layer_sizes[1:-1]


def requested_configs(
    arch: str = DEFAULT_ARCH,
    hidden: list[int] | None = None,
    activation: str | None = None,
    training: dict[str, Any] | None = None,
    pixel_mean: float = 0.1307,
    pixel_std: float = 0.3081,
) -> tuple[NetworkConfig, TrainConfig]:
    """The network and training configuration a run asks for: the recipe of `arch` (mlp or cnn,
    netcore.config.recipe) with the given input scaling, the MLP's `hidden` widths and
    `activation` when given (None: 128 and relu), and the `training` fields over the recipe's
    TrainConfig. A ConfigError says what is wrong: an unknown arch, a bad value, or hidden widths
    or an activation for the CNN, which has its own layers."""
    if arch != "mlp" and (hidden is not None or activation is not None):
        raise ConfigError(
            f"hidden widths and an activation describe the MLP; arch {arch} has its own layers"
        )
    try:
        network, base = recipe(arch, pixel_mean, pixel_std)
        if arch == "mlp":
            hidden = hidden or default_hidden()
            network = NetworkConfig.mlp(hidden, activation or "relu", pixel_mean, pixel_std)
    except (TypeError, ValueError) as error:
        raise ConfigError(str(error)) from None
    try:  # each value's type (an int may stand for a float), range and name
        return network, TrainConfig.from_dict(base.to_dict() | (training or {}))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"[training] {error}") from None


@dataclass
class RunConfig:
    source: str
    revision: str | None
    registry: str
    training: TrainConfig  # the whole configuration: the arch's recipe with the changes asked for
    arch: str = DEFAULT_ARCH  # mlp or cnn
    hidden: list[int] | None = field(default_factory=default_hidden)  # the MLP's; None for cnn
    activation: str | None = "relu"  # the MLP's; None for cnn
    min_accuracy: float = DEFAULT_MIN_ACCURACY
    expected_rows: dict[str, int] = field(default_factory=lambda: dict(FULL_MNIST_ROWS))
    promote: str = DEFAULT_POLICY  # when the new version becomes production (promotion.decide)

    def flow_parameters(self) -> dict[str, Any]:
        """Keyword arguments for flows.training.flow.training_flow."""
        return {
            "source": self.source,
            "revision": self.revision,
            "arch": self.arch,
            "hidden": self.hidden,
            "activation": self.activation,
            "training": self.training.to_dict(),
            "min_accuracy": self.min_accuracy,
            "registry": self.registry,
            "expected_rows": self.expected_rows,
            "promote": self.promote,
        }


def read_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Parse and check a TOML configuration file; errors name the file and the problem."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: not a readable TOML file ({error})") from None
    for section, values in document.items():
        if section not in SECTIONS or not isinstance(values, dict):
            raise ConfigError(f"{path}: unknown section [{section}]; known: {', '.join(SECTIONS)}")
        unknown = sorted(set(values) - SECTIONS[section])
        if unknown:
            raise ConfigError(
                f"{path}: unknown key(s) {', '.join(unknown)} in [{section}]; "
                f"known: {', '.join(sorted(SECTIONS[section]))}"
            )
    return document


def resolve_run_config(flags: dict[str, Any], config_file: str | Path | None = None) -> RunConfig:
    """Merge `flags` (None = not given) over the environment, the TOML file and the defaults."""
    document = read_config_file(config_file) if config_file else {}
    data, network = document.get("data", {}), document.get("network", {})
    publish = document.get("publish", {})
    where = f"{config_file}: " if config_file else ""

    def pick(flag: str, env: str | None, section: dict[str, Any], default: Any) -> Any:
        for value in (flags.get(flag), env and os.environ.get(env), section.get(flag)):
            if value not in (None, ""):
                return value
        return default

    arch = pick("arch", None, network, DEFAULT_ARCH)
    if arch not in ARCHS:
        raise ConfigError(f"{where}arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    hidden = pick("hidden", None, network, None)
    activation = pick("activation", None, network, None)
    if arch != "mlp" and (hidden is not None or activation is not None):
        given = "--hidden" if flags.get("hidden") is not None else "[network] hidden"
        if hidden is None:
            given = "[network] activation"
        chosen = "--arch" if flags.get("arch") else "[network] arch"
        raise ConfigError(
            f"{where}{given} describes the MLP, but {chosen} is {arch}, which has its own "
            "layers: give one of them"
        )
    training_values = dict(document.get("training", {}))
    if arch != "mlp" and os.environ.get(THREADS_ENV):
        training_values["threads"] = _thread_count(os.environ[THREADS_ENV])
    training_values |= {k: flags[k] for k in TRAINING_FLAGS if flags.get(k) is not None}
    try:
        if hidden is not None:
            hidden = [int(n) for n in ([hidden] if isinstance(hidden, int) else hidden)]
        network_config, training = requested_configs(arch, hidden, activation, training_values)
        run = RunConfig(
            source=pick("source", "DIGITFLOW_MNIST_SOURCE", data, mnist_source()),
            revision=pick("revision", None, data, None),
            registry=pick("registry", None, publish, default_registry()),
            training=training,
            arch=arch,
            hidden=network_config.layer_sizes[1:-1] if arch == "mlp" else None,
            activation=network_config.activation,
            min_accuracy=float(pick("min_accuracy", None, publish, DEFAULT_MIN_ACCURACY)),
            expected_rows={
                split: int(data.get(f"{split}_rows", rows))
                for split, rows in FULL_MNIST_ROWS.items()
            },
            promote=pick("promote", None, publish, DEFAULT_POLICY),
        )
    except (TypeError, ValueError, ConfigError) as error:
        raise ConfigError(f"{where}{error}") from None
    if run.promote not in POLICIES:
        raise ConfigError(
            f"{where}promote must be one of {', '.join(POLICIES)}, got {run.promote!r}"
        )
    if not 0 <= run.min_accuracy <= 1:
        raise ConfigError(f"{where}min_accuracy must be between 0 and 1, got {run.min_accuracy}")
    return run


def _thread_count(value: str) -> int:
    """DIGITFLOW_BLAS_THREADS as the CNN's training threads: a whole number from 1 to 64."""
    if not value.strip().isdigit() or not 1 <= int(value) <= 64:
        raise ConfigError(
            f"{THREADS_ENV} must be a whole number of threads from 1 to 64, got {value!r}"
        )
    return int(value)
