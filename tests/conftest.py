"""Shared fixtures.

- `mnist_dir`: the real MNIST Parquet folder (DIGITFLOW_MNIST_SOURCE, else ../shared/data/mnist
  beside the checkout). Tests that need it skip when it is absent, but fail under CI.
- `small_mnist_dir`: a real Parquet subset (2,000 train / 500 test rows) in the same layout.
- `prefect_harness`: one Prefect test server for the whole session (starting one costs ~10 s).
- `untrained_registry`: a model registry holding v1, an untrained network (for tests where the
  labels need not be right, only identical for identical inputs); read-only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep Prefect quiet and local before anything imports it.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TRAIN_FILE = "train-00000-of-00001.parquet"
TEST_FILE = "test-00000-of-00001.parquet"
# Where this machine (and CI) keeps real MNIST, beside the checkout.
LOCAL_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    source = os.environ.get("DIGITFLOW_MNIST_SOURCE") or str(LOCAL_MNIST)
    folder = Path(source)
    if not (folder / TRAIN_FILE).is_file():
        message = f"real MNIST Parquet files not found (DIGITFLOW_MNIST_SOURCE={source!r})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def small_mnist_dir(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 2,000 train and 500 test rows of real MNIST, written as Parquet files."""
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("small-mnist")
    for name, rows in ((TRAIN_FILE, 2000), (TEST_FILE, 500)):
        table = pq.read_table(mnist_dir / name).slice(0, rows)
        pq.write_table(table, folder / name)
    return folder


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """A throwaway Prefect API for the session; request it in any test that runs a flow."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness

    # Generous: on a busy 2-core machine the test server has been seen to need more than 60 s.
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def untrained_registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.builders import untrained_registry

    return untrained_registry(tmp_path_factory.mktemp("registry"))
