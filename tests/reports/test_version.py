"""The pictures of a published version, end to end: a real training flow (Prefect test harness, a
real 2,000/500-row MNIST subset) draws them, publishes them in the version and its model card and
as Prefect artifacts, and `digitflow report` (a real process) turns the version into one page."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from PIL import Image

from flows.reports import figures

# An MLP version's pictures, in page order (figures.MODEL_FIGURES, without a CNN's filters).
FIGURE_SIZES = {
    "training-curves.png": figures.CURVES_SIZE,
    "confusion-matrix.png": figures.CONFUSION_SIZE,
    "confident-mistakes.png": figures.GRID_SIZE,
    "first-layer-weights.png": figures.weights_grid_size(128),
}
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


@pytest.fixture(scope="module")
def published(
    prefect_harness: None, small_mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    home = tmp_path_factory.mktemp("digitflow-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIGITFLOW_HOME", str(home))
        from flows.training.flow import training_flow

        summary = training_flow(
            source=str(small_mnist_dir),
            training={"epochs": 2},
            min_accuracy=0.0,
            expected_rows={"train": 2000, "test": 500},
        )
    assert summary["published"], summary
    return {"home": home, "summary": summary, "version_dir": Path(summary["artifact"])}


def artifacts(flow_run_id: str) -> dict[str, str]:
    """The flow run's artifacts: key -> data."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    only_this_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]))
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=only_this_run)
    return {artifact.key: artifact.data for artifact in found}


def inlined_sizes(text: str) -> list[tuple[int, int]]:
    """The pixel size of every PNG inlined as a data: URI in `text`."""
    sizes = []
    for encoded in DATA_URI.findall(text):
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
            assert image.format == "PNG"
            sizes.append(image.size)
    return sizes


def test_version_carries_the_figures_checksummed(published: dict) -> None:
    version_dir = published["version_dir"]
    manifest = json.loads((version_dir / "manifest.json").read_text())
    for name, size in FIGURE_SIZES.items():
        path = version_dir / "figures" / name
        with Image.open(path) as image:
            assert (image.format, image.size) == ("PNG", size)
        assert f"figures/{name}" in manifest["files"]


def test_model_card_embeds_every_figure(published: dict) -> None:
    card = (published["version_dir"] / "README.md").read_text()
    linked = re.findall(r"!\[[^\]]+\]\((figures/[^)]+\.png)\)", card)
    assert sorted(linked) == sorted(f"figures/{name}" for name in FIGURE_SIZES)
    for name in FIGURE_SIZES:  # an MLP's pictures (a CNN's show its filters instead)
        assert figures.MODEL_FIGURES[name] in card


def test_evaluate_and_publish_show_the_figures_in_prefect(published: dict) -> None:
    found = artifacts(published["summary"]["flow_run_id"])
    expected = sorted(FIGURE_SIZES.values())
    assert sorted(inlined_sizes(found["mnist-evaluation-figures"])) == expected
    card = found["mnist-model-card"]
    assert sorted(inlined_sizes(card)) == expected
    assert "](figures/" not in card  # every relative link was inlined
    assert card.startswith(f"# digitflow MNIST digit classifier, {published['summary']['version']}")


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "digitflow"), *args]
    environment = {**os.environ, "DIGITFLOW_HOME": str(home)}
    return subprocess.run(command, capture_output=True, text=True, env=environment, cwd=home)


def test_report_inlines_every_figure_of_the_version(published: dict) -> None:
    version = published["summary"]["version"]
    output = published["home"] / "pages" / "report.html"
    result = run_cli("report", version, "--output", str(output), home=published["home"])
    assert result.returncode == 0, result.stderr
    page = output.read_text()
    inlined = [base64.b64decode(encoded) for encoded in DATA_URI.findall(page)]
    figures_dir = published["version_dir"] / "figures"
    assert inlined == [(figures_dir / name).read_bytes() for name in FIGURE_SIZES]
    accuracy = published["summary"]["test_accuracy"]
    assert f"<th>test accuracy</th><td>{accuracy:.2%}</td>" in page
    assert 'src="figures/' not in page and "file://" not in page


def test_report_defaults_to_latest_and_report_html(published: dict) -> None:
    result = run_cli("report", home=published["home"])
    assert result.returncode == 0, result.stderr
    assert len(DATA_URI.findall((published["home"] / "report.html").read_text())) == 4


def test_report_refuses_a_tampered_figure_in_one_line(published: dict, tmp_path: Path) -> None:
    registry = tmp_path / "models"
    copy = registry / published["summary"]["version"]
    shutil.copytree(published["version_dir"], copy)
    (registry / "latest").write_text(copy.name + "\n")
    weights = copy / "figures" / "first-layer-weights.png"
    weights.chmod(0o644)  # published files are read-only; someone changes one anyway
    weights.write_bytes(weights.read_bytes()[:-10])
    output = tmp_path / "tampered.html"
    result = run_cli(
        "report", "--registry", str(registry), "--output", str(output), home=published["home"]
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "first-layer-weights.png: checksum mismatch" in result.stderr
    assert not output.exists()


def test_report_of_a_missing_version_says_which_exist(published: dict) -> None:
    result = run_cli("report", "v99", home=published["home"])
    assert result.returncode == 1
    assert "no published version v99" in result.stderr
