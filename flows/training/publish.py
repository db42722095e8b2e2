"""The publish stage's logic: the accuracy gate, then the run as the registry's next version.

    publication = publish_run(prepared, RunFolder.of(key), "data/models", 0.97, provenance, log)
    publication.published, publication.version, publication.location, publication.card

Below the gate nothing is published. Otherwise the version's files are assembled in the run
folder's payload/: the weights and config, the metrics, `model.onnx` (exported, then checked
against netcore with onnxruntime on the test set), the figures; the registry then publishes them
with the model card (README.md, which names the version) and the manifest.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.paths import FIGURES_DIR, METRICS_FILE, ONNX_FILE, RunFolder
from flows.registry.onnx_export import check_parity, save_onnx, to_onnx
from flows.registry.versions import publish
from flows.reports.figures import existing_figures
from flows.reports.inline import inline_images
from flows.reports.model_card import model_card
from flows.training.prepare import load_split
from netcore.io import writing
from netcore.weights import CONFIG_FILE, WEIGHTS_FILE, load_model


@dataclass
class Publication:
    """The publish stage's outcome."""

    published: bool
    version: str | None = None  # "v3"
    location: str | None = None  # the version folder: a local path or a URL
    card: str = ""  # the model card with its figures inlined (for a Prefect artifact)

    @property
    def link(self) -> str:
        """The version folder as a URL."""
        assert self.location is not None
        return self.location if "://" in self.location else Path(self.location).resolve().as_uri()


def publish_run(
    prepared: dict[str, Any],
    run: RunFolder,
    registry: str,
    min_accuracy: float,
    provenance: dict[str, Any],
    warn: Callable[[str], None],
) -> Publication:
    """Publish the trained model of `run` to `registry` if its test accuracy reaches
    `min_accuracy`; `warn` is told when it does not."""
    metrics = json.loads(run.metrics.read_text())
    accuracy = metrics["test_accuracy"]
    if accuracy < min_accuracy:
        warn(f"not published: test accuracy {accuracy:.4f} is below the gate {min_accuracy}")
        return Publication(published=False)

    payload = run.payload
    shutil.rmtree(payload, ignore_errors=True)
    with writing(payload):  # a full disk: one line naming it (the next run starts it afresh)
        payload.mkdir()
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            shutil.copy2(run.model / name, payload / name)
        shutil.copy2(run.metrics, payload / METRICS_FILE)
        network = load_model(payload)
        onnx_model = to_onnx(network)
        worst = check_parity(onnx_model, network, load_split(prepared, "test")[0])
        save_onnx(onnx_model, payload / ONNX_FILE)
        for name, source in extra_version_files(run).items():
            (payload / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, payload / name)
    provenance = {**provenance, "onnx_max_abs_difference": worst}
    figures = [
        (caption, f"{FIGURES_DIR}/{path.name}")
        for caption, path in existing_figures(payload / FIGURES_DIR)
    ]

    def describe(version: str) -> dict[str, str]:
        return {"README.md": model_card(version, metrics, provenance, figures)}

    version, location = publish(registry, payload, describe, provenance)
    card = inline_images(model_card(version, metrics, provenance, figures), payload)
    return Publication(published=True, version=version, location=location, card=card)


def extra_version_files(run: RunFolder) -> dict[str, Path]:
    """Files a published version carries besides the model, config, metrics and ONNX model:
    {name inside the version: file}. Today: everything under the run's figures/ (the pictures,
    flows/reports/figures.py, are drawn there during the run). Add more here."""
    if not run.figures.is_dir():
        return {}
    return {
        f"{FIGURES_DIR}/{path.relative_to(run.figures).as_posix()}": path
        for path in sorted(run.figures.rglob("*"))
        if path.is_file()
    }
