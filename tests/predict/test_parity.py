"""Accuracy parity (slow): the 10,000 MNIST test images as PNG files, scored by the batch-predict
flow, must be within 0.3 percentage points of the accuracy of the same version on the in-memory
test set (what the evaluate stage computes): normalizing arbitrary images must not hurt MNIST.
For an MLP version and for a CNN version (trained briefly: the parity is the point, not the
accuracy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from flows.registry.versions import load_published, publish
from netcore.config import NetworkConfig, TrainConfig
from netcore.mnist import read_parquet
from netcore.network import Network
from netcore.preprocess import normalize
from netcore.trainer import train
from netcore.weights import save_model

TEST_FILE = "test-00000-of-00001.parquet"


# Each architecture's network and a short training of it.
VERSIONS = {
    "mlp": (NetworkConfig(), TrainConfig(epochs=5)),
    "cnn": (NetworkConfig.cnn(), TrainConfig.cnn(epochs=2, augment_distortions=0)),
}


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(VERSIONS))
def test_folder_of_mnist_pngs_scores_like_the_evaluate_stage(
    prefect_harness: None, mnist_dir: Path, tmp_path: Path, arch: str
) -> None:
    from flows.predict.flow import predict_flow

    pixels, labels = read_parquet(mnist_dir / "train-00000-of-00001.parquet")
    network_config, training = VERSIONS[arch]
    network = Network(network_config, np.random.default_rng(0))
    train(network, pixels, labels, training)
    save_model(network, tmp_path / "payload", training)
    publish(str(tmp_path / "models"), tmp_path / "payload", lambda version: {}, {})
    published = load_published(str(tmp_path / "models"))

    test_pixels, test_labels = read_parquet(mnist_dir / TEST_FILE)
    in_memory = float(
        (published.network.predict(normalize(test_pixels, network.config)) == test_labels).mean()
    )

    # The Hub's own PNG bytes, one file each, named by index under a folder per label.
    table = pq.read_table(mnist_dir / TEST_FILE)
    pngs = table.column("image").combine_chunks().field("bytes").to_pylist()
    folder = tmp_path / "mnist-test"
    for index, (png, label) in enumerate(zip(pngs, test_labels, strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        (folder / str(label) / f"{index:05d}.png").write_bytes(png)

    output = tmp_path / "predictions.parquet"
    summary = predict_flow(str(folder), model=str(tmp_path / "models"), output=str(output))
    rows = pq.read_table(output).to_pylist()
    assert (summary["scored"], summary["failed"], len(rows)) == (10_000, 0, 10_000)
    truth = np.array([int(row["path"].split("/")[0]) for row in rows])
    from_files = float((np.array([row["label"] for row in rows]) == truth).mean())
    print(f"{arch}: accuracy in memory {in_memory:.4f}, from PNG files {from_files:.4f}")
    assert in_memory > 0.97
    assert abs(from_files - in_memory) <= 0.003
