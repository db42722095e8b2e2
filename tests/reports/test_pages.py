"""`digitflow report --predictions`: the batch-predict report, on real PNG files scored by a real
network, through the real CLI."""

from __future__ import annotations

import base64
import html
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flows.predict.output import atomic_writer, prediction_table, read_predictions
from flows.reports import figures, pages
from netcore.config import NetworkConfig, TrainConfig
from netcore.errors import DataFileError
from netcore.images import load_digits
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
    """A folder of real MNIST PNG files (some as dark ink on paper, one broken), scored the way
    batch predict does (netcore.images, a briefly trained network, flows.predict.output' table
    and writer) into predictions.parquet."""
    pixels, labels = read_parquet(small_mnist_dir / "train-00000-of-00001.parquet")
    network = Network(NetworkConfig(), np.random.default_rng(0))
    train(network, pixels, labels, TrainConfig(epochs=1, augment_shift=0))

    folder = tmp_path_factory.mktemp("scans")
    (folder / "nested").mkdir()
    test_pixels, _ = read_parquet(small_mnist_dir / "test-00000-of-00001.parquet")
    paths = []
    for index, image in enumerate(test_pixels[:IMAGES]):
        relative = f"nested/scan-{index:03d}.png" if index % 2 else f"digit-{index:03d}.png"
        on_paper = index % 3 == 0
        Image.fromarray(255 - image if on_paper else image).resize((56, 56)).save(folder / relative)
        paths.append(relative)
    (folder / "broken.png").write_bytes(b"this is not a PNG")
    paths.append("broken.png")

    digits, problems = load_digits([str(folder / path) for path in paths])
    probabilities = network.predict_proba(normalize(digits, network.config))
    table = prediction_table(paths, probabilities, problems, "v1")
    predictions = folder.parent / "predictions.parquet"
    with atomic_writer(predictions) as write:
        write(table)
    return {"folder": folder, "predictions": predictions, "table": table}


def test_read_predictions_in_every_output_format(scored: dict, tmp_path: Path) -> None:
    table = scored["table"]
    for name in ("p.parquet", "p.csv", "p.jsonl"):
        with atomic_writer(tmp_path / name) as write:
            write(table)
        read = read_predictions(tmp_path / name)
        assert read.num_rows == IMAGES + 1
        assert read["path"].to_pylist() == table["path"].to_pylist()
        assert read["label"].to_pylist() == table["label"].to_pylist()
        assert read["error"].to_pylist() == table["error"].to_pylist()
        assert read["error"][-1].as_py()  # the broken file's reason


def test_read_predictions_refuses_other_files(scored: dict, tmp_path: Path) -> None:
    not_predictions = tmp_path / "other.parquet"
    pq.write_table(pa.table({"path": ["a.png"], "score": [1.0]}), not_predictions)
    with pytest.raises(DataFileError, match=r"other\.parquet.*missing column"):
        read_predictions(not_predictions)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(DataFileError, match=r"garbage\.parquet: not batch-predict output"):
        read_predictions(garbage)
    with pytest.raises(DataFileError, match=r"unknown format ..xlsx"):
        read_predictions(not_predictions.rename(tmp_path / "predictions.xlsx"))
    bad_label = tmp_path / "bad-label.csv"
    bad_label.write_text(
        ",".join(scored["table"].column_names) + "\n" + "a.png,seven" + "," * 13 + "\n"
    )
    with pytest.raises(DataFileError, match=r"bad-label\.csv: not batch-predict output"):
        read_predictions(bad_label)
    with pytest.raises(DataFileError, match=r"missing\.csv: predictions file not found"):
        read_predictions(tmp_path / "missing.csv")


def test_least_confident_skips_errors_and_sorts(scored: dict) -> None:
    table = scored["table"]
    chosen = pages.least_confident(table, 24)
    assert chosen.num_rows == 24
    assert None not in chosen["label"].to_pylist()
    confidence = np.array(chosen["confidence"].to_pylist())
    assert np.all(np.diff(confidence) >= 0)
    all_scored = np.array([c for c in table["confidence"].to_pylist() if c is not None])
    assert confidence[-1] <= np.sort(all_scored)[23]


def test_input_file_stays_inside_the_input_folder(scored: dict) -> None:
    folder = scored["folder"]
    assert pages.input_file(folder, "nested/scan-001.png") == (folder / "nested/scan-001.png")
    with pytest.raises(DataFileError, match="outside the input folder"):
        pages.input_file(folder, "../predictions.parquet")


def test_least_confident_images_as_the_network_saw_them(scored: dict, tmp_path: Path) -> None:
    pixels, captions = pages.least_confident_images(scored["table"], scored["folder"], 5)
    assert pixels.shape == (5, 28, 28) and pixels.dtype == np.uint8
    assert all(pixels[i].max() > 200 and pixels[i, 0, 0] == 0 for i in range(5))  # ink bright
    chosen = pages.least_confident(scored["table"], 5).to_pylist()
    first = chosen[0]
    assert captions[0] == (
        f"said {first['label']}, {first['confidence']:.0%}\n{Path(first['path']).name}"
    )
    # A file gone since scoring, or a path leading out of the folder: a blank tile, never a crash.
    moved = tmp_path / "moved"
    shutil.copytree(scored["folder"], moved)
    (moved / first["path"]).unlink()
    outside = scored["table"].set_column(0, "path", pa.array(["../../etc/passwd"] * (IMAGES + 1)))
    for table, folder in ((scored["table"], moved), (outside, scored["folder"])):
        pixels, captions = pages.least_confident_images(table, folder, 5)
        assert "(cannot read)" in captions[0] and pixels[0].max() == 0


def test_predictions_page_inlines_every_figure(scored: dict, tmp_path: Path) -> None:
    page = pages.predictions_page(scored["predictions"], scored["folder"], tmp_path)
    images = inlined_pngs(page)
    expected = [figures.HISTOGRAM_SIZE, figures.HISTOGRAM_SIZE, figures.GRID_SIZE]
    assert [image.size for image in images] == expected
    assert "<th>scored</th><td>120</td>" in page
    assert "<th>failed</th><td>1</td>" in page
    reason = scored["table"]["error"][-1].as_py()
    assert f"<tr><th>{html.escape(reason)}</th><td>1</td></tr>" in page
    assert 'src="data:' in page and 'src="http' not in page and "file://" not in page


def test_predictions_page_without_input_folder_says_how_to_get_images(
    scored: dict, tmp_path: Path
) -> None:
    page = pages.predictions_page(scored["predictions"], None, tmp_path)
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
    assert not (tmp_path / "pages.html").exists()


def test_cli_refuses_mixed_options(scored: dict, tmp_path: Path) -> None:
    for args, message in (
        (("v1", "--predictions", str(scored["predictions"])), "either a VERSION"),
        (("--input", str(scored["folder"])), "--input goes with --predictions"),
    ):
        result = run_cli("report", *args, cwd=tmp_path)
        assert result.returncode == 2
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
