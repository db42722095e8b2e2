"""What one training run uses, from command-line flags, the environment, a TOML file and defaults.

Precedence: flags, then the environment (DIGITFLOW_MNIST_SOURCE, DIGITFLOW_HOME for the default
registry), then the TOML file, then the defaults. The TOML file (all sections optional):

    [data]
    source = "/path/to/mnist"   # Hub id, folder or fsspec URL
    revision = "main"           # Hub sources only
    train_rows = 60000          # expected row counts; 0 accepts any
    test_rows = 10000

    [network]
    hidden = [128]              # hidden layer widths
    activation = "relu"         # relu or tanh

    [training]                  # any netcore TrainConfig field
    epochs = 20
    seed = 1

    [publish]
    min_accuracy = 0.97
    registry = "data/models"    # or any fsspec URL
    promote = "if-not-worse"    # never, if-better, if-not-worse or always: when production moves

    run = resolve_run_config({"epochs": 5}, "train.toml")
    training_flow(**run.flow_parameters())
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
from netcore.activations import get_activation
from netcore.config import NetworkConfig, TrainConfig
from netcore.errors import NetcoreError

DEFAULT_MIN_ACCURACY = 0.97
SECTIONS = {
    "data": {"source", "revision", "train_rows", "test_rows"},
    "network": {"hidden", "activation"},
    "training": {f.name for f in dataclasses.fields(TrainConfig)},
    "publish": {"min_accuracy", "registry", "promote"},
}
# Flags that set a TrainConfig field, by flag name.
TRAINING_FLAGS = ("epochs", "seed", "batch_size", "learning_rate")


class ConfigError(NetcoreError):
    """A configuration file or value that cannot be used."""


def default_hidden() -> list[int]:
    return NetworkConfig().layer_sizes[1:-1]


@dataclass
class RunConfig:
    source: str
    revision: str | None
    registry: str
    training: TrainConfig
    hidden: list[int] = field(default_factory=default_hidden)
    activation: str = "relu"
    min_accuracy: float = DEFAULT_MIN_ACCURACY
    expected_rows: dict[str, int] = field(default_factory=lambda: dict(FULL_MNIST_ROWS))
    promote: str = DEFAULT_POLICY  # when the new version becomes production (promotion.decide)

    def flow_parameters(self) -> dict[str, Any]:
        """Keyword arguments for flows.training.flow.training_flow."""
        return {
            "source": self.source,
            "revision": self.revision,
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

    training_values = dict(document.get("training", {}))
    training_values |= {k: flags[k] for k in TRAINING_FLAGS if flags.get(k) is not None}
    try:  # each value's type (an int may stand for a float), range and name
        training = TrainConfig.from_dict(training_values)
    except ValueError as error:
        raise ConfigError(f"{where}[training] {error}") from None
    try:
        hidden = pick("hidden", None, network, default_hidden())
        hidden = [int(n) for n in ([hidden] if isinstance(hidden, int) else hidden)]
        run = RunConfig(
            source=pick("source", "DIGITFLOW_MNIST_SOURCE", data, mnist_source()),
            revision=pick("revision", None, data, None),
            registry=pick("registry", None, publish, default_registry()),
            training=training,
            hidden=hidden,
            activation=pick("activation", None, network, "relu"),
            min_accuracy=float(pick("min_accuracy", None, publish, DEFAULT_MIN_ACCURACY)),
            expected_rows={
                split: int(data.get(f"{split}_rows", rows))
                for split, rows in FULL_MNIST_ROWS.items()
            },
            promote=pick("promote", None, publish, DEFAULT_POLICY),
        )
        NetworkConfig(layer_sizes=[784, *run.hidden, 10])
        get_activation(run.activation)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}{error}") from None
    if run.promote not in POLICIES:
        raise ConfigError(
            f"{where}promote must be one of {', '.join(POLICIES)}, got {run.promote!r}"
        )
    if not 0 <= run.min_accuracy <= 1:
        raise ConfigError(f"{where}min_accuracy must be between 0 and 1, got {run.min_accuracy}")
    return run
