"""A CNN version through everything downstream of netcore, beside an MLP version: the training
flow (real Prefect test harness, a real 2,000 / 500-row MNIST subset) trains, evaluates,
compares, exports to ONNX and publishes it; the skip-unchanged rule tells the architectures
apart; `digitflow models list / show / compare`, `digitflow report` and `digitflow predict` work
with it. The CNN trains for 3 epochs here (the full recipe is the slow test in test_full.py)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from flows.cli.main import main
from flows.registry.aliases import read_history
from flows.registry.versions import load_published
from flows.runtime import console
from flows.training.flow import training_flow
from netcore.config import TrainConfig
from netcore.mnist import read_parquet
from netcore.preprocess import normalize

SMALL_ROWS = {"train": 2000, "test": 500}
CNN_TRAINING = {"epochs": 3, "augment_distortions": 0}  # over the CNN recipe's TrainConfig


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DIGITFLOW_HOME", str(tmp_path / "data"))
    yield tmp_path / "data"
    console.enable(False)  # the commands below turn the console on


def run_flow(source: Path, **options) -> dict:
    parameters = {"source": str(source), "min_accuracy": 0.5, "expected_rows": SMALL_ROWS}
    return training_flow(**(parameters | options))


def command(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_cnn_version_goes_through_every_stage_and_command(
    prefect_harness, small_mnist_dir: Path, home: Path, tmp_path: Path
) -> None:
    registry = str(home / "models")
    mlp = run_flow(small_mnist_dir, hidden=[32], training={"epochs": 2})
    assert mlp["version"] == "v1" and mlp["promoted"]

    cnn = run_flow(small_mnist_dir, arch="cnn", training=CNN_TRAINING, promote="always")
    assert cnn["published"] and cnn["version"] == "v2" and cnn["promoted"]
    assert cnn["test_accuracy"] >= 0.8 and cnn["epochs"] == 3
    # Compared with the MLP champion on the same test images.
    assert cnn["champion"] == "v1" and cnn["p_value"] is not None
    version = Path(cnn["artifact"])
    model = load_published(f"{registry}@v2")  # every checksum verified
    assert model.network.config.arch == "cnn"
    assert model.network.config.describe() == "conv5x5x16-pool-conv5x5x32-pool-dense128-10"
    training = model.manifest["config"]["training"]
    assert training == TrainConfig.cnn(**CNN_TRAINING).to_dict() and training["threads"] == 2
    # ONNX: convolutions, checked against netcore on the whole (500-image) test set.
    assert model.manifest["onnx_max_abs_difference"] <= 1e-5
    ops = {node.op_type for node in onnx.load(version / "model.onnx").graph.node}
    assert {"Conv", "MaxPool", "Relu", "MatMul", "Softmax"} <= ops
    # The first convolution's filters in place of the MLP's weight tiles.
    figures = sorted(p.name for p in (version / "figures").iterdir())
    assert "first-layer-filters.png" in figures and "first-layer-weights.png" not in figures
    card = (version / "README.md").read_text()
    assert "A convolutional network (conv5x5x16-pool-conv5x5x32-pool-dense128-10: 80,202" in card
    assert "![What each filter of the first convolution looks for]" in card

    # The architecture is part of the configuration a scheduled run compares: the CNN's own
    # configuration skips, the MLP's (v1's) does not, since production is now the CNN.
    same = run_flow(small_mnist_dir, arch="cnn", training=CNN_TRAINING, skip_unchanged=True)
    assert same["skipped"] and "production v2" in same["skipped_because"]
    other = run_flow(
        small_mnist_dir, hidden=[32], training={"epochs": 2}, skip_unchanged=True, promote="never"
    )
    assert not other["skipped"] and other["version"] == "v3"
    assert read_history(registry).holder("production") == "v2"

    listed = command("models", "list", "--registry", registry).splitlines()
    assert listed[0].split()[:6] == ["version", "published", "(UTC)", "test", "acc", "arch"]
    rows = {line.split()[0].lstrip("*"): line.split() for line in listed[1:] if "v" in line[:4]}
    assert rows["v1"][3:5] == ["mlp", "784-32-10"]
    assert rows["v2"][3:5] == ["cnn", "conv5x5x16-pool-conv5x5x32-pool-dense128-10"]
    as_json = json.loads(command("models", "list", "--registry", registry, "--json"))
    assert [(row["arch"], row["layer_sizes"]) for row in as_json] == [
        ("mlp", [784, 32, 10]),
        ("cnn", None),
        ("mlp", [784, 32, 10]),
    ]
    shown = command("models", "show", "v2", "--registry", registry)
    assert "architecture    convolutional (CNN), 80,202 parameters, 2.23 MFLOP per image" in shown
    assert "network         conv5x5x16-pool-conv5x5x32-pool-dense128-10" in shown
    mlp_shown = command("models", "show", "v1", "--registry", registry)
    assert "network         784-32-10 relu" in mlp_shown
    assert "architecture    fully connected (MLP), 25,450 parameters" in mlp_shown

    # An MLP and a CNN compared on the same test set.
    compared = json.loads(
        command("models", "compare", "v1", "v2", "--registry", registry, "--json")
    )
    assert (compared["first"], compared["second"]) == ("v1", "v2")
    assert compared["second_accuracy"] == pytest.approx(cnn["test_accuracy"])

    page = tmp_path / "v2.html"
    command("report", "v2", "--registry", registry, "--output", str(page))
    html = page.read_text()
    assert "convolutional (CNN), 80,202 parameters" in html
    assert "What each filter of the first convolution looks for" in html

    # Batch prediction with the CNN (production): MNIST digits as PNG files come back pixel for
    # pixel, so every label is the CNN's own prediction on the in-memory image.
    from flows.predict.flow import predict_flow

    pixels, _ = read_parquet(small_mnist_dir / "test-00000-of-00001.parquet")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for index, digit in enumerate(pixels[:60]):
        Image.fromarray(digit).save(inbox / f"{index:02d}.png")
    output = tmp_path / "inbox.parquet"
    summary = predict_flow(str(inbox), model=registry, output=str(output))
    assert (summary["scored"], summary["failed"], summary["model_version"]) == (60, 0, "v2")
    rows = sorted(pq.read_table(output).to_pylist(), key=lambda row: row["path"])
    flat = pixels[:60].reshape(60, 784)
    expected = model.network.predict(normalize(flat, model.network.config))
    assert [row["label"] for row in rows] == expected.tolist()
