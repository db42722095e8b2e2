"""The digitflow command line: help, one-line errors, models list / show, configuration, train.

Most tests run the real console script in a subprocess; `train` runs in-process (click's runner)
under the session's Prefect harness, so no second Prefect server is started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from flows.cli.main import main
from flows.registry.versions import publish
from flows.runtime import console
from flows.training.run_config import ConfigError, requested_configs, resolve_run_config
from netcore.config import NetworkConfig, TrainConfig
from tests.builders import card, make_payload

DIGITFLOW = str(Path(sys.executable).parent / "digitflow")
SMALL_CONFIG = """\
[data]
train_rows = 2000
test_rows = 500

[network]
hidden = [32]

[training]
epochs = 2
"""


def digitflow(*args: str) -> subprocess.CompletedProcess:
    """The real console script, in its own process."""
    return subprocess.run([DIGITFLOW, *args], capture_output=True, text=True, timeout=120)


def invoke(*args: str) -> subprocess.CompletedProcess:
    """The same command in this process (faster), with the same exit status and output."""
    result = CliRunner().invoke(main, list(args))
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("digitflow: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """A registry with two published versions."""
    for seed in (1, 2):
        payload = tmp_path / f"payload-{seed}"
        payload.mkdir()
        provenance = {
            "test_accuracy": 0.9 + seed / 100,
            "config": {"network": {"layer_sizes": [784, 16, 10], "activation": "relu"}},
            "data": {"source": "ylecun/mnist"},
        }
        publish(str(tmp_path / "models"), make_payload(payload, seed), card, provenance)
    return tmp_path / "models"


def test_help_shows_examples() -> None:
    runner = CliRunner()
    for command in ([], ["train"], ["models"], ["models", "list"], ["models", "show"]):
        result = runner.invoke(main, [*command, "--help"])
        assert result.exit_code == 0 and "Examples:" in result.output, command


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    result = digitflow("train", "--epoch", "3")
    assert result.returncode == 2
    assert_one_line_error(result, "No such option '--epoch'", "(see 'digitflow train --help')")
    assert_one_line_error(invoke("train", "--epochs", "0"), "0 is not in the range x>=1")
    assert_one_line_error(invoke("train", "--hidden", "12,x"), "expected widths like")
    assert_one_line_error(invoke("nonsense"), "No such command 'nonsense'")
    assert_one_line_error(invoke("train", "--arch", "rnn"), "'rnn' is not one of 'mlp', 'cnn'")
    contradiction = digitflow("train", "--arch", "cnn", "--hidden", "64")
    assert contradiction.returncode == 2
    assert_one_line_error(contradiction, "--hidden sets the MLP's layers; --arch cnn has its own")


def test_bad_config_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[training]\nepochs = \n")
    assert_one_line_error(invoke("train", "--config", str(bad)), f"{bad}: not a readable TOML")
    bad.write_text("[training]\nepoch = 3\n")
    assert_one_line_error(
        invoke("train", "--config", str(bad)), f"{bad}: unknown key(s) epoch in [training]"
    )
    assert_one_line_error(
        invoke("train", "--config", str(tmp_path / "none.toml")), "configuration file not found"
    )


def test_models_list_and_show(registry: Path) -> None:
    listed = invoke("models", "list", "--registry", str(registry))
    assert listed.returncode == 0
    rows = listed.stdout.splitlines()
    assert rows[1].split()[0] == "v1" and rows[2].split()[:2] == ["*", "v2"]
    as_json = json.loads(invoke("models", "list", "--registry", str(registry), "--json").stdout)
    assert [(r["version"], r["latest"], r["test_accuracy"]) for r in as_json] == [
        ("v1", False, 0.91),
        ("v2", True, 0.92),
    ]

    shown = digitflow("models", "show", "v1", "--registry", str(registry))
    assert shown.returncode == 0
    assert shown.stdout.startswith(f"v1  {registry}/v1")
    assert "checksums       verified (5 files)" in shown.stdout
    document = json.loads(invoke("models", "show", "--registry", str(registry), "--json").stdout)
    assert document["version"] == "v2" and document["verified"] is True
    assert document["manifest"]["files"]["model.safetensors"]["sha256"]


def test_models_errors_are_one_line(registry: Path, tmp_path: Path) -> None:
    assert_one_line_error(
        invoke("models", "show", "v9", "--registry", str(registry)),
        "no published version v9 (available: v1, v2)",
    )
    weights = registry / "v1" / "model.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    assert_one_line_error(
        digitflow("models", "show", "1", "--registry", str(registry)),
        f"{weights}: checksum mismatch",
    )
    empty = invoke("models", "list", "--registry", str(tmp_path / "nothing"))
    assert empty.returncode == 0 and "no published versions" in empty.stdout


# ---- configuration --------------------------------------------------------------------------


def test_flags_beat_environment_beat_file_beat_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "train.toml"
    config.write_text(
        '[data]\nsource = "from-file"\ntrain_rows = 0\n'
        '[network]\nhidden = [64, 32]\nactivation = "tanh"\n'
        "[training]\nepochs = 7\nseed = 3\n"
        '[publish]\nmin_accuracy = 0.9\nregistry = "file-registry"\n'
    )
    monkeypatch.setenv("DIGITFLOW_MNIST_SOURCE", "from-env")
    monkeypatch.setenv("DIGITFLOW_HOME", str(tmp_path / "home"))
    run = resolve_run_config({"epochs": 2}, config)
    assert run.source == "from-env"
    assert run.training.epochs == 2 and run.training.seed == 3
    assert run.hidden == [64, 32] and run.activation == "tanh"
    assert run.min_accuracy == 0.9 and run.registry == "file-registry"
    assert run.expected_rows == {"train": 0, "test": 10_000}

    run = resolve_run_config({"source": "from-flag", "hidden": [16], "registry": "r"}, config)
    assert (run.source, run.hidden, run.registry) == ("from-flag", [16], "r")

    monkeypatch.delenv("DIGITFLOW_MNIST_SOURCE")
    assert resolve_run_config({}, config).source == "from-file"
    defaults = resolve_run_config({})
    assert defaults.source == "ylecun/mnist" and defaults.min_accuracy == 0.97
    assert defaults.registry == str(tmp_path / "home" / "models")
    assert defaults.expected_rows == {"train": 60_000, "test": 10_000}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[model]\nx = 1\n", "unknown section [model]"),
        ("[training]\nepochs = 0\n", "invalid training configuration: epochs=0"),
        ("[training]\nepochs = 'ten'\n", "[training] epochs must be int, got 'ten'"),
        ("[training]\nnesterov = 1\n", "[training] nesterov must be bool, got 1"),
        ('[network]\nactivation = "swish"\n', "unknown activation 'swish'"),
        ('[network]\narch = "rnn"\n', "arch must be one of mlp, cnn, got 'rnn'"),
        (
            '[network]\narch = "cnn"\nhidden = [64]\n',
            "[network] hidden describes the MLP, but [network] arch is cnn, which has its own",
        ),
        (
            '[network]\narch = "cnn"\nactivation = "tanh"\n',
            "[network] activation describes the MLP, but [network] arch is cnn",
        ),
        ("[publish]\nmin_accuracy = 97\n", "min_accuracy must be between 0 and 1"),
    ],
)
def test_config_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "train.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=r"^" + str(config).replace(".", r"\.")) as error:
        resolve_run_config({}, config)
    assert message in str(error.value)


def test_arch_picks_the_recipe_that_the_file_and_flags_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DIGITFLOW_BLAS_THREADS", raising=False)
    default = resolve_run_config({})
    assert default.arch == "mlp" and default.training == TrainConfig()
    assert (default.hidden, default.activation) == ([128], "relu")
    assert default.flow_parameters()["arch"] == "mlp"

    # --arch cnn --epochs 3: three epochs of the CNN recipe, every other field the recipe's.
    cnn = resolve_run_config({"arch": "cnn", "epochs": 3})
    assert cnn.training == TrainConfig.cnn(epochs=3)
    assert (cnn.arch, cnn.hidden, cnn.activation) == ("cnn", None, None)
    parameters = cnn.flow_parameters()
    assert (parameters["arch"], parameters["hidden"], parameters["activation"]) == (
        "cnn",
        None,
        None,
    )
    assert parameters["training"] == TrainConfig.cnn(epochs=3).to_dict()

    config = tmp_path / "train.toml"
    config.write_text('[network]\narch = "cnn"\n[training]\nepochs = 5\nthreads = 1\n')
    from_file = resolve_run_config({}, config)
    assert from_file.arch == "cnn" and from_file.training == TrainConfig.cnn(epochs=5, threads=1)
    assert resolve_run_config({"arch": "mlp"}, config).training == TrainConfig(epochs=5, threads=1)
    with pytest.raises(
        ConfigError, match=r"--hidden describes the MLP, but \[network\] arch is cnn"
    ):
        resolve_run_config({"hidden": [64]}, config)

    # DIGITFLOW_BLAS_THREADS: the CNN's threads (over the file's), never the MLP's.
    monkeypatch.setenv("DIGITFLOW_BLAS_THREADS", "3")
    assert resolve_run_config({}, config).training.threads == 3
    assert resolve_run_config({"arch": "mlp"}).training.threads == 1
    monkeypatch.setenv("DIGITFLOW_BLAS_THREADS", "two")
    with pytest.raises(ConfigError, match="DIGITFLOW_BLAS_THREADS must be a whole number"):
        resolve_run_config({}, config)


def test_requested_configs_are_the_recipes_with_the_changes_asked_for() -> None:
    network, training = requested_configs("cnn", training={"epochs": 2}, pixel_mean=0.2)
    assert network == NetworkConfig.cnn(pixel_mean=0.2) and training == TrainConfig.cnn(epochs=2)
    network, training = requested_configs("mlp", [64, 32], "tanh", {"seed": 4})
    assert network.layer_sizes == [784, 64, 32, 10] and network.activation == "tanh"
    assert training == TrainConfig(seed=4)
    assert requested_configs() == (NetworkConfig(), TrainConfig())
    with pytest.raises(ConfigError, match="arch cnn has its own layers"):
        requested_configs("cnn", [64])
    with pytest.raises(ConfigError, match="unknown architecture 'rnn'"):
        requested_configs("rnn")


# ---- train ----------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """DIGITFLOW_HOME in tmp_path; the settings `train` writes into os.environ are undone."""
    saved = dict(os.environ)
    monkeypatch.setenv("DIGITFLOW_HOME", str(tmp_path / "data"))
    yield tmp_path
    os.environ.clear()
    os.environ.update(saved)
    console.enable(False)


def test_train_json_output_cache_notes_and_gate_exit_status(
    prefect_harness, small_mnist_dir: Path, cli_env: Path
) -> None:
    config = cli_env / "small.toml"
    config.write_text(SMALL_CONFIG)
    args = ["train", "--source", str(small_mnist_dir), "--config", str(config), "--json"]
    runner = CliRunner()

    first = runner.invoke(main, [*args, "--min-accuracy", "0.5"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)  # stdout holds exactly one JSON object
    assert summary["published"] is True and summary["version"] == "v1"
    assert summary["artifact"] == str((cli_env / "data" / "models" / "v1").resolve())
    assert summary["epochs"] == 2 and summary["train_seconds"] > 0
    assert 0.5 <= summary["test_accuracy"] <= 1
    assert "download: done" in first.stderr and "publish: v1 -> " in first.stderr

    second = runner.invoke(main, [*args, "--min-accuracy", "0.999"])
    assert second.exit_code == 3
    assert json.loads(second.stdout)["published"] is False
    assert "download: reused the cached copy" in second.stderr
    assert "prepare: reused the cached arrays" in second.stderr
    assert "digitflow: not published: test accuracy" in second.stderr


def test_train_from_an_unreachable_hub_fails_in_one_line(
    prefect_harness, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    result = CliRunner().invoke(main, ["train", "--source", "ylecun/mnist"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("digitflow: error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "cannot reach the Hugging Face Hub at http://127.0.0.1:9" in errors[0]
    assert "DIGITFLOW_MNIST_SOURCE=/path/to/mnist" in errors[0]
