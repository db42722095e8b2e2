"""`digitflow report --predictions`: the batch-predict report, on real PNG files scored by a real
network, through the real CLI."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flows import figures, report
from netcore.config import NetworkConfig, TrainConfig
from netcore.errors import DataFileError
from netcore.mnist import read_parquet
from netcore.network import Network
from netcore.preprocess import normalize
from netcore.trainer import train

IMAGES = 120


def inlined_pngs(page: str) -> list[Image.Image]:
    """Every image inlined in an HTML page, decoded."""
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(uri))) for uri in uris]


@pytest.fixture(scope="module")
def scored(small_mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A folder of real MNIST PNG files (some inverted to dark ink on paper, one broken) and a
    predictions file in the batch-predict layout, scored by a briefly trained network."""
    pixels, labels = read_parquet(small_mnist_dir / "train-00000-of-00001.parquet")
    network = Network(NetworkConfig(), np.random.default_rng(0))
    train(network, pixels, labels, TrainConfig(epochs=1, augment_shift=0))

    folder = tmp_path_factory.mktemp("scans")
    (folder / "nested").mkdir()
    test_pixels, _ = read_parquet(small_mnist_dir / "test-00000-of-00001.parquet")
    test_pixels = test_pixels[:IMAGES]
    paths = []
    for index, image in enumerate(test_pixels):
        relative = f"nested/scan-{index:03d}.png" if index % 2 else f"digit-{index:03d}.png"
        on_paper = index % 3 == 0
        Image.fromarray(255 - image if on_paper else image).resize((56, 56)).save(folder / relative)
        paths.append(relative)
    (folder / "broken.png").write_bytes(b"this is not a PNG")

    probabilities = network.predict_proba(normalize(test_pixels, network.config))
    columns: dict[str, list] = {
        "path": [*paths, "broken.png"],
        "label": [*probabilities.argmax(axis=1).tolist(), None],
        "confidence": [*probabilities.max(axis=1).tolist(), None],
    }
    for k in range(10):
        columns[f"prob_{k}"] = [*probabilities[:, k].tolist(), None]
    columns["error"] = [None] * IMAGES + ["cannot identify image file"]
    columns["model_version"] = ["v1"] * (IMAGES + 1)
    table = pa.table(columns)
    predictions = folder.parent / "predictions.parquet"
    pq.write_table(table, predictions)
    return {"folder": folder, "predictions": predictions, "table": table}


def test_read_predictions_in_every_output_format(scored: dict, tmp_path: Path) -> None:
    table = scored["table"]
    as_csv = tmp_path / "p.csv"
    pa.csv.write_csv(table, as_csv)
    as_jsonl = tmp_path / "p.jsonl"
    as_jsonl.write_text("".join(json.dumps(row) + "\n" for row in table.to_pylist()))
    for path in (scored["predictions"], as_csv, as_jsonl):
        read = report.read_predictions(path)
        assert read.num_rows == IMAGES + 1
        assert read["path"].to_pylist() == table["path"].to_pylist()


def test_read_predictions_refuses_other_files(scored: dict, tmp_path: Path) -> None:
    not_predictions = tmp_path / "other.parquet"
    pq.write_table(pa.table({"path": ["a.png"], "score": [1.0]}), not_predictions)
    with pytest.raises(DataFileError, match=r"other\.parquet.*missing column"):
        report.read_predictions(not_predictions)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(DataFileError, match=r"garbage\.parquet.*cannot read"):
        report.read_predictions(garbage)
    with pytest.raises(DataFileError, match=r"unknown predictions format"):
        report.read_predictions(not_predictions.rename(tmp_path / "predictions.xlsx"))
    with pytest.raises(DataFileError, match=r"missing\.csv: predictions file not found"):
        report.read_predictions(tmp_path / "missing.csv")


def test_least_confident_skips_errors_and_sorts(scored: dict) -> None:
    table = scored["table"]
    chosen = report.least_confident(table, 24)
    assert chosen.num_rows == 24
    assert None not in chosen["label"].to_pylist()
    confidence = np.array(chosen["confidence"].to_pylist())
    assert np.all(np.diff(confidence) >= 0)
    all_scored = np.array([c for c in table["confidence"].to_pylist() if c is not None])
    assert confidence[-1] <= np.sort(all_scored)[23]


def test_input_file_stays_inside_the_input_folder(scored: dict) -> None:
    folder = scored["folder"]
    assert report.input_file(folder, "nested/scan-001.png") == (folder / "nested/scan-001.png")
    with pytest.raises(DataFileError, match="outside the input folder"):
        report.input_file(folder, "../predictions.parquet")


def test_display_image_shows_files_as_they_look(scored: dict, tmp_path: Path) -> None:
    on_paper = report.display_image(scored["folder"] / "digit-000.png")  # index 0: inverted
    assert on_paper.shape == (56, 56) and on_paper.dtype == np.uint8
    assert np.median(on_paper) > 200  # white paper stays white
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (400, 300), (200, 30, 30)).save(photo)
    assert report.display_image(photo).shape == (84, 112)  # shrunk to fit, aspect kept
    transparent = tmp_path / "alpha.png"
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(transparent)
    assert report.display_image(transparent).min() == 255  # transparency is paper, not ink
    with pytest.raises(DataFileError, match="too large to show"):
        report.display_image(scored["folder"] / "digit-000.png", max_pixels=1000)


def test_predictions_page_inlines_every_figure(scored: dict, tmp_path: Path) -> None:
    page = report.predictions_page(scored["predictions"], scored["folder"], tmp_path)
    images = inlined_pngs(page)
    expected = [figures.HISTOGRAM_SIZE, figures.HISTOGRAM_SIZE, figures.GRID_SIZE]
    assert [image.size for image in images] == expected
    assert "<th>scored</th><td>120</td>" in page
    assert "<th>failed</th><td>1</td>" in page
    assert "cannot identify image file" in page
    assert 'src="data:' in page and 'src="http' not in page and "file://" not in page


def test_predictions_page_without_input_folder_says_how_to_get_images(
    scored: dict, tmp_path: Path
) -> None:
    page = report.predictions_page(scored["predictions"], None, tmp_path)
    assert len(inlined_pngs(page)) == 2
    assert "pass --input FOLDER" in page


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "digitflow"), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=os.environ.copy())


def test_cli_writes_the_predictions_report(scored: dict, tmp_path: Path) -> None:
    output = tmp_path / "out" / "predictions.html"
    result = run_cli(
        "report",
        "--predictions",
        str(scored["predictions"]),
        "--input",
        str(scored["folder"]),
        "--output",
        str(output),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert str(output) in result.stdout
    assert len(inlined_pngs(output.read_text())) == 3
    assert not list(output.parent.glob(".*partial"))


def test_cli_refuses_a_bad_predictions_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"nope")
    result = run_cli("report", "--predictions", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "bad.parquet" in result.stderr
    assert not (tmp_path / "report.html").exists()
