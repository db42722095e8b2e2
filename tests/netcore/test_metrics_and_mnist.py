"""Metrics by hand, and the MNIST Parquet reader on real and broken files."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from netcore import DataFileError
from netcore.metrics import (
    accuracy,
    compare_predictions,
    confusion_matrix,
    mcnemar_exact,
    most_confused,
    precision_recall,
)
from netcore.mnist import read_parquet


def test_metrics_on_a_hand_counted_example():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 1, 2])
    assert accuracy(labels, predictions) == pytest.approx(4 / 6)
    cm = confusion_matrix(labels, predictions, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [0, 1, 1]])
    precision, recall = precision_recall(cm)
    np.testing.assert_allclose(precision, [1.0, 0.5, 1.0])
    np.testing.assert_allclose(recall, [0.5, 1.0, 0.5])
    assert most_confused(cm, top=5) == [(2, 1, 1), (0, 1, 1)]


@pytest.mark.parametrize(
    ("only_first", "only_second", "p_value"),
    [
        # Worked by hand: p = 2 * sum(C(n, k), k <= min) / 2^n, n = b + c, at most 1.
        (0, 0, 1.0),  # no discordant pair: no evidence
        (1, 0, 1.0),  # 2 * C(1,0) / 2 = 1
        (0, 5, 0.0625),  # 2 * 1 / 32
        (5, 0, 0.0625),  # symmetric
        (0, 6, 0.03125),  # 2 * 1 / 64: the first significant one-sided count
        (1, 5, 0.21875),  # 2 * (1 + 6) / 64 = 14 / 64
        (2, 8, 0.109375),  # 2 * (1 + 10 + 45) / 1024 = 112 / 1024
        (1, 9, 0.021484375),  # 2 * (1 + 10) / 1024 = 22 / 1024
        (3, 3, 1.0),  # 2 * 42 / 64 > 1
        (4, 6, 0.75390625),  # 2 * (1 + 10 + 45 + 120 + 210) / 1024 = 772 / 1024
    ],
)
def test_mcnemar_exact_matches_hand_computed_values(only_first, only_second, p_value):
    assert mcnemar_exact(only_first, only_second) == p_value  # exact: powers of two


def test_mcnemar_exact_on_test_set_sized_counts():
    # 50 vs 100 discordant of 10,000: 2 * P(X <= 50), X ~ Binomial(150, 1/2), about 6e-5
    assert mcnemar_exact(50, 100) == pytest.approx(5.6e-05, rel=0.05)
    assert mcnemar_exact(0, 5000) == 0.0  # underflows to zero, no error
    assert mcnemar_exact(5000, 5000) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_compare_predictions_on_a_hand_counted_example():
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 1])
    first = np.array([0, 1, 1, 1, 2, 0, 2, 1])  # wrong on rows 1 and 5
    second = np.array([0, 0, 1, 2, 2, 2, 2, 1])  # wrong on row 3
    compared = compare_predictions(labels, first, second, 3)
    assert compared["first_accuracy"] == 6 / 8 and compared["second_accuracy"] == 7 / 8
    assert compared["accuracy_delta"] == pytest.approx(1 / 8)
    assert compared["agreement"] == 5 / 8
    assert (compared["only_first_right"], compared["only_second_right"]) == (1, 2)
    assert compared["p_value"] == 1.0  # 2 * (1 + 3) / 8
    assert [c["recall_delta"] for c in compared["per_class"]] == pytest.approx([0.5, -1 / 3, 1 / 3])
    assert compared["confusion_difference"] == [[1, -1, 0], [0, -1, 1], [-1, 0, 1]]


def test_reads_real_mnist_rows(small_mnist_dir):
    pixels, labels = read_parquet(small_mnist_dir / "test-00000-of-00001.parquet")
    assert pixels.shape == (500, 28, 28) and pixels.dtype == np.uint8
    assert labels.dtype == np.int64 and set(labels) == set(range(10))
    assert 0.1 < pixels.mean() / 255 < 0.15  # MNIST is mostly dark background


def _png(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(path, images, labels):
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array([{"bytes": b, "path": None} for b in images], type=image_type),
            "label": pa.array(labels, type=pa.int64()),
        }
    )
    pq.write_table(table, path)


def test_broken_files_are_refused_naming_file_and_problem(tmp_path):
    good = _png(np.zeros((28, 28), np.uint8))
    cases = {
        "labels.parquet": ([good, good], [3, 12], "labels must be integers 0-9"),
        "size.parquet": ([_png(np.zeros((32, 28), np.uint8))], [1], "expected 28x28"),
        "rgb.parquet": ([_png(np.zeros((28, 28), np.uint8), "RGB")], [1], "grayscale"),
        "undecodable.parquet": ([b"\x89PNG\r\n\x1a\nbroken"], [1], "row 0: image does not decode"),
    }
    for name, (images, labels, message) in cases.items():
        _write(tmp_path / name, images, labels)
        with pytest.raises(DataFileError, match=message) as error:
            read_parquet(tmp_path / name)
        assert name in str(error.value)

    pq.write_table(pa.table({"pixels": [1, 2], "label": [1, 2]}), tmp_path / "schema.parquet")
    with pytest.raises(DataFileError, match="expected columns 'image' and 'label'"):
        read_parquet(tmp_path / "schema.parquet")

    _write(tmp_path / "rows.parquet", [good] * 3, [1, 2, 3])
    with pytest.raises(DataFileError, match="has 3 rows, expected 60000"):
        read_parquet(tmp_path / "rows.parquet", expected_rows=60000)

    whole = (tmp_path / "rows.parquet").read_bytes()
    (tmp_path / "truncated.parquet").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataFileError, match=r"truncated\.parquet: cannot read as Parquet"):
        read_parquet(tmp_path / "truncated.parquet")
    with pytest.raises(DataFileError, match="cannot read as Parquet"):
        read_parquet(tmp_path / "missing.parquet")
