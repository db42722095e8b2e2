"""Each pipeline stage's logic as plain functions, on real Parquet files (no Prefect)."""

from __future__ import annotations

import io
import json
import shutil
import socket
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from threadpoolctl import threadpool_info, threadpool_limits

from flows.paths import RunFolder
from flows.registry.versions import publish
from flows.reports.evaluation import evaluation_markdown
from flows.reports.model_card import model_card
from flows.training.champion import unchanged_version
from flows.training.download import (
    DownloadError,
    check_hub_reachable,
    download,
    source_fingerprint,
    source_kind,
)
from flows.training.evaluate import evaluate, save_evaluation
from flows.training.prepare import load_split, prepare
from flows.training.train import train_model
from netcore import DataFileError, Network, NetworkConfig
from netcore.config import TrainConfig
from netcore.mnist import read_parquet, validate_parquet
from netcore.preprocess import pixel_statistics
from tests.builders import card, make_payload

TRAIN, TEST = "train-00000-of-00001.parquet", "test-00000-of-00001.parquet"


@pytest.fixture(scope="module")
def tiny_source(small_mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 train and 100 test rows of real MNIST in the Hub's file layout."""
    folder = tmp_path_factory.mktemp("tiny-mnist")
    for name, rows in ((TRAIN, 300), (TEST, 100)):
        pq.write_table(pq.read_table(small_mnist_dir / name).slice(0, rows), folder / name)
    return folder


@pytest.fixture(scope="module")
def downloaded(tiny_source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return download(
        str(tiny_source), None, tmp_path_factory.mktemp("raw"), {"train": 300, "test": 100}
    )


# ---- download -------------------------------------------------------------------------------


def test_download_writes_validated_hashed_raw_files(downloaded: dict, tiny_source: Path) -> None:
    files = downloaded["files"]
    assert {split: f["rows"] for split, f in files.items()} == {"train": 300, "test": 100}
    for split, source_name in (("train", TRAIN), ("test", TEST)):
        path = Path(files[split]["path"])
        assert path.name == f"{split}.parquet"
        assert len(files[split]["sha256"]) == 64
        pixels, labels = read_parquet(path)
        expected_pixels, expected_labels = read_parquet(tiny_source / source_name)
        np.testing.assert_array_equal(pixels, expected_pixels)
        np.testing.assert_array_equal(labels, expected_labels)


def test_download_from_an_fsspec_url(tiny_source: Path, tmp_path: Path, monkeypatch) -> None:
    import datasets

    # The suite runs with HF_HUB_OFFLINE=1, in which datasets refuses every non-local URL.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    fs = fsspec.filesystem("memory")
    root = f"/mnist-{uuid.uuid4().hex}"
    for name in (TRAIN, TEST):
        fs.pipe_file(f"{root}/{name}", (tiny_source / name).read_bytes())
    result = download(f"memory://{root}", None, tmp_path, {"train": 300, "test": 100})
    assert result["files"]["test"]["rows"] == 100
    assert source_kind(f"memory://{root}") == "url"
    assert source_fingerprint(f"memory://{root}", None).startswith("url:")


def test_source_kinds(tiny_source: Path) -> None:
    assert source_kind(str(tiny_source)) == "local"
    assert source_kind("./somewhere") == "local"
    assert source_kind("file:///data/mnist") == "local"
    assert source_kind("s3://bucket/mnist") == "url"
    assert source_kind("ylecun/mnist") == "hub"


def test_fingerprint_follows_the_files_content(tiny_source: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_source, copy)
    assert source_fingerprint(str(copy), None) == source_fingerprint(str(tiny_source), None)
    table = pq.read_table(copy / TEST)
    pq.write_table(table.slice(1), copy / TEST)
    assert source_fingerprint(str(copy), None) != source_fingerprint(str(tiny_source), None)
    assert source_fingerprint("ylecun/mnist", None) == "hub:ylecun/mnist@main"


def test_missing_folder_and_missing_split(tmp_path: Path, tiny_source: Path) -> None:
    with pytest.raises(DownloadError, match="no such folder"):
        download(str(tmp_path / "nothing-here"), None, tmp_path / "raw")
    only_train = tmp_path / "only-train"
    only_train.mkdir()
    shutil.copy(tiny_source / TRAIN, only_train / TRAIN)
    with pytest.raises(DownloadError, match="no Parquet files for the 'test' split"):
        download(str(only_train), None, tmp_path / "raw")


def test_unreachable_hub_fails_fast_with_a_hint(monkeypatch) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError) as error:
        check_hub_reachable("ylecun/mnist")
    message = str(error.value)
    assert f"cannot reach the Hugging Face Hub at http://127.0.0.1:{port}" in message
    assert "--source /path/to/mnist" in message and "DIGITFLOW_MNIST_SOURCE" in message
    with pytest.raises(DownloadError, match="DIGITFLOW_MNIST_SOURCE"):
        download("ylecun/mnist", None, "unused")


def test_offline_hub_dataset_not_in_cache_says_how_to_use_a_local_copy() -> None:
    # The suite runs with HF_HUB_OFFLINE=1: datasets looks in the local cache only.
    with pytest.raises(DownloadError) as error:
        download(f"nobody/no-such-dataset-{uuid.uuid4().hex[:8]}", None, "unused")
    assert "DIGITFLOW_MNIST_SOURCE=/path/to/mnist" in str(error.value)
    assert "\n" not in str(error.value)


def test_revision_is_refused_for_a_folder(tiny_source: Path) -> None:
    with pytest.raises(DownloadError, match="--revision only applies to Hub datasets"):
        download(str(tiny_source), "main", "unused")


# ---- validation of raw files ----------------------------------------------------------------


def _png(mode: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 0).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (28, 28), 0).save(buffer, format="JPEG")
    return buffer.getvalue()


def _with_row(source: Path, path: Path, row: int, image: bytes | None = None, label=None) -> Path:
    table = pq.read_table(source)
    columns = {
        "image": table.column("image").to_pylist(),
        "label": table.column("label").to_pylist(),
    }
    if image is not None:
        columns["image"][row] = {"bytes": image, "path": None}
    if label is not None:
        columns["label"][row] = label
    pq.write_table(pa.table(columns), path)
    return path


def test_validate_accepts_real_mnist(tiny_source: Path) -> None:
    assert validate_parquet(tiny_source / TEST, expected_rows=100) == 100


@pytest.mark.parametrize(
    ("image", "label", "message"),
    [
        (_png("RGB", (28, 28)), None, "row 7: image is a 28x28 8-bit RGB PNG"),
        (_png("L", (32, 28)), None, "row 7: image is a 32x28 8-bit grayscale PNG"),
        (_png("I;16", (28, 28)), None, "row 7: image is a 28x28 16-bit grayscale PNG"),
        (_jpeg("RGB"), None, r"row 7: image is RGB 28x28, expected 28x28 grayscale"),
        (b"\x00" * 40, None, "row 7: not a readable image"),
        (None, 10, "row 7: label 10 is not a digit 0-9"),
        (None, -1, "row 7: label -1 is not a digit 0-9"),
    ],
    ids=["rgb-png", "wrong-size", "16-bit", "rgb-jpeg", "garbage", "label-10", "label-negative"],
)
def test_validate_names_file_row_and_problem(
    tiny_source: Path, tmp_path: Path, image, label, message
) -> None:
    path = _with_row(tiny_source / TEST, tmp_path / "bad.parquet", 7, image, label)
    with pytest.raises(DataFileError, match=message) as error:
        validate_parquet(path)
    assert str(error.value).startswith(str(path))


def test_validate_accepts_grayscale_jpeg(tiny_source: Path, tmp_path: Path) -> None:
    path = _with_row(tiny_source / TEST, tmp_path / "jpeg.parquet", 3, _jpeg("L"))
    assert validate_parquet(path) == 100


def test_validate_row_count_and_schema(tiny_source: Path, tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="has 100 rows, expected 10000"):
        validate_parquet(tiny_source / TEST, expected_rows=10_000)
    renamed = tmp_path / "renamed.parquet"
    pq.write_table(pq.read_table(tiny_source / TEST).rename_columns(["picture", "label"]), renamed)
    with pytest.raises(DataFileError, match="expected columns 'image' and 'label'"):
        validate_parquet(renamed)
    not_parquet = tmp_path / "text.parquet"
    not_parquet.write_text("hello")
    with pytest.raises(DataFileError, match="cannot read as Parquet"):
        validate_parquet(not_parquet)


# ---- prepare --------------------------------------------------------------------------------


def test_prepare_writes_flat_uint8_arrays_and_statistics(downloaded: dict, tmp_path: Path) -> None:
    raw = {split: f["path"] for split, f in downloaded["files"].items()}
    prepared = prepare(raw, tmp_path)
    assert prepared["rows"] == {"train": 300, "test": 100}
    for split in ("train", "test"):
        pixels, labels = load_split(prepared, split)
        assert isinstance(pixels, np.memmap) and isinstance(labels, np.memmap)
        assert pixels.dtype == np.uint8 and pixels.shape == (prepared["rows"][split], 784)
        assert labels.dtype == np.int64
        expected_pixels, expected_labels = read_parquet(raw[split])
        np.testing.assert_array_equal(pixels, expected_pixels.reshape(-1, 784))
        np.testing.assert_array_equal(labels, expected_labels)
    train_pixels, _ = read_parquet(raw["train"])
    assert (prepared["pixel_mean"], prepared["pixel_std"]) == pixel_statistics(train_pixels)
    assert 0.05 < prepared["pixel_mean"] < 0.25 and 0.2 < prepared["pixel_std"] < 0.45
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "test_labels.npy",
        "test_pixels.npy",
        "train_labels.npy",
        "train_pixels.npy",
    ]


def test_load_split_refuses_a_wrong_array(downloaded: dict, tmp_path: Path) -> None:
    raw = {split: f["path"] for split, f in downloaded["files"].items()}
    prepared = prepare(raw, tmp_path)
    np.save(tmp_path / "test_labels.npy", np.zeros(100, dtype=np.float32))
    with pytest.raises(DataFileError, match=r"test_labels\.npy: has dtype float32, expected int64"):
        load_split(prepared, "test")
    np.save(tmp_path / "test_labels.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataFileError, match=r"cannot load as a \.npy array"):
        load_split(prepared, "test")  # object arrays would need pickle: refused


# ---- train ----------------------------------------------------------------------------------


def blas_threads() -> int:
    return next(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")


@pytest.mark.parametrize(("threads", "blas_while_training"), [(2, 1), (1, 2)])
def test_netcore_threads_train_with_one_blas_thread_each(
    downloaded: dict, tmp_path: Path, threads: int, blas_while_training: int
) -> None:
    """OpenBLAS's thread count belongs to the process: a worker that never set
    OPENBLAS_NUM_THREADS has a thread per core. With netcore's own threads (the CNN recipe) the
    train stage holds BLAS at one thread while they run, and gives the process its count back;
    a one-thread run keeps BLAS as it was."""
    raw = {split: f["path"] for split, f in downloaded["files"].items()}
    prepared = prepare(raw, tmp_path / "prepared")
    network = NetworkConfig(layer_sizes=[784, 16, 10]).to_dict()
    training = TrainConfig(epochs=2, augment_distortions=0, threads=threads).to_dict()
    seen = []
    with threadpool_limits(2, "blas"):  # as OpenBLAS starts on this 2-core machine, unset
        trained = train_model(
            prepared,
            network,
            training,
            RunFolder(tmp_path / "run"),
            lambda _: seen.append(blas_threads()),
        )
        assert blas_threads() == 2
    assert trained["epochs"] == 2 and seen == [blas_while_training] * 2


def test_unchanged_version_compares_the_whole_configuration(tmp_path: Path) -> None:
    registry = str(tmp_path / "models")
    training = TrainConfig(epochs=2).to_dict()
    # Published before TrainConfig had these fields: it was trained with what they default to.
    older = {k: v for k, v in training.items() if k not in ("stroke_width", "threads")}
    network = NetworkConfig(layer_sizes=[784, 16, 10], pixel_mean=0.13, pixel_std=0.31)
    provenance = {
        "config": {"network": network.to_dict(), "training": older},
        "data": {"fingerprint": "data-1"},
    }
    publish(registry, make_payload(tmp_path / "payload"), card, provenance)

    def same(*args) -> str | None:
        found = unchanged_version(registry, *args)
        return found and found["version"]

    assert same("data-1", "mlp", [16], None, {"epochs": 2}) == "v1"
    assert same("data-1", "mlp", [16], "relu", TrainConfig(epochs=2).to_dict()) == "v1"
    assert same("data-2", "mlp", [16], None, {"epochs": 2}) is None  # other data
    assert same("data-1", "mlp", [16], "tanh", {"epochs": 2}) is None
    assert same("data-1", "mlp", [32], None, {"epochs": 2}) is None
    assert same("data-1", "mlp", [16], None, {"epochs": 2, "threads": 2}) is None
    assert same("data-1", "cnn", None, None, {"epochs": 2}) is None  # the architecture


# ---- evaluate -------------------------------------------------------------------------------


def _always(digit: int) -> Network:
    """A network without hidden layers that answers `digit` for every image."""
    config = NetworkConfig(layer_sizes=[784, 10])
    params = {
        "layers.0.weight": np.zeros((784, 10), dtype=np.float32),
        "layers.0.bias": np.eye(10, dtype=np.float32)[digit] * 5,
    }
    return Network(config, params=params)


def test_evaluate_on_known_predictions(tmp_path: Path) -> None:
    labels = np.array([3, 3, 3, 1, 1, 7, 0, 3], dtype=np.int64)
    pixels = np.random.default_rng(0).integers(0, 256, (len(labels), 784), dtype=np.uint8)
    metrics, probabilities = evaluate(_always(3), pixels, labels)
    assert metrics["test_accuracy"] == 0.5
    assert metrics["test_examples"] == 8
    assert probabilities.shape == (8, 10)
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion[:, 3].tolist() == [1, 2, 0, 4, 0, 0, 0, 1, 0, 0] and confusion.sum() == 8
    by_digit = {row["digit"]: row for row in metrics["per_class"]}
    assert by_digit[3] == {"digit": 3, "precision": 0.5, "recall": 1.0, "support": 4}
    assert by_digit[1]["recall"] == 0.0 and by_digit[1]["support"] == 2
    assert metrics["most_confused"][0] == {"true": 1, "predicted": 3, "count": 2}
    p_true = probabilities[np.arange(8), labels]
    assert metrics["test_loss"] == pytest.approx(-np.mean(np.log(p_true)), rel=1e-6)

    written = save_evaluation(tmp_path, metrics, probabilities)
    assert json.loads(written["metrics.json"].read_text()) == metrics
    saved = np.load(written["test_probabilities.npy"], allow_pickle=False)
    np.testing.assert_allclose(saved, probabilities)
    assert np.load(written["test_predictions.npy"], allow_pickle=False).tolist() == [3] * 8

    markdown = evaluation_markdown(metrics)
    assert "**Accuracy 50.00%** on 8 images" in markdown
    assert "| **1** | 0 | 0 | 0 | 2 | 0 | 0 | 0 | 0 | 0 | 0 |" in markdown
    assert "- true 1 predicted as 3: 2 times" in markdown


def test_model_card_has_every_section() -> None:
    metrics, _ = evaluate(_always(3), np.zeros((4, 784), np.uint8), np.array([3, 3, 1, 0]))
    metrics["training"] = {"epochs": 2, "best_epoch": 2, "train_seconds": 1.5, "final_loss": 0.3}
    provenance = {
        "registry": "data/models",
        "config": {
            "network": NetworkConfig(layer_sizes=[784, 10]).to_dict(),
            "training": {"epochs": 2, "seed": 0},
        },
        "data": {
            "source": "ylecun/mnist",
            "revision": None,
            "raw": {"train": {"rows": 60000, "sha256": "ab" * 32}},
        },
        "git": {"commit": "0123abc", "dirty": False},
        "flow_run": {"id": "1234", "name": "happy-run"},
        "timestamps": {"finished_training": "2026-01-01T00:00:00+00:00"},
    }
    text = model_card("v7", metrics, provenance, [("Confusion matrix", "figures/confusion.png")])
    assert text.startswith("# digitflow MNIST digit classifier, v7")
    for expected in (
        "**Test accuracy 50.00%**",
        "`happy-run`",
        "`0123abc`",
        "## Intended use",
        "## Limitations",
        "## Configuration",
        "## Data",
        "ab" * 32,
        "![Confusion matrix](figures/confusion.png)",
        'load_published("data/models@v7")',
        "| seed | 0 |",
        "A fully connected network (784-10 relu: 7,850 parameters, 0.02 MFLOP per image)",
        "| dense (units 10) | 10 | 7,850 |",
        "A fully connected network: it does not know that neighbouring pixels",
    ):
        assert expected in text, expected

    # A CNN's card names its architecture, lists its layers and has its own limitations.
    provenance["config"] = {
        "network": NetworkConfig.cnn().to_dict(),
        "training": TrainConfig.cnn().to_dict(),
    }
    text = model_card("v8", metrics, provenance)
    for expected in (
        "A convolutional network (conv5x5x16-pool-conv5x5x32-pool-dense128-10: 80,202 "
        "parameters, 2.23 MFLOP per image)",
        "| input | 28 x 28 x 1 |  |",
        "| conv2d (filters 16, kernel 5, padding valid) | 24 x 24 x 16 | 416 |",
        "| flatten | 512 |  |",
        "A small convolutional network: its filters find strokes wherever they are",
        "| stroke_width | 0.5 |",
    ):
        assert expected in text, expected
    assert "A fully connected network" not in text
    assert "'type': 'conv2d'" not in text  # the layer specs are the Architecture table
