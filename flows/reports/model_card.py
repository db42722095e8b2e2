"""The model card: the README.md each published version carries.

    text = model_card("v3", metrics, provenance, figures=[("Confusion matrix", "figures/x.png")])

What the model is, how well it does (test metrics, per class, the confusion matrix), how it was
made (configuration, data with hashes, code version, flow run), what it is for, where it fails,
and how to load it. Figures, when the version has any, are embedded by relative path.
"""

from __future__ import annotations

from typing import Any

from flows.reports.comparison import champion_markdown
from flows.reports.evaluation import evaluation_markdown, per_class_rows
from flows.reports.markdown import table

FILES = {
    "model.safetensors": "the weights, one named tensor per layer (safetensors: no pickle)",
    "config.json": "network architecture and input scaling, and the training configuration",
    "model.onnx": "the same network for ONNX runtimes: uint8 pixels (batch, 784) -> probabilities",
    "metrics.json": "test metrics, confusion matrix, per-epoch training history",
    "manifest.json": "sha256 of every file, data hashes, code and package versions, flow run",
    "figures/": "the pictures embedded below",
}

INTENDED_USE = """\
Recognising a single handwritten digit (0-9) in a 28x28 grayscale image prepared the way MNIST
was: bright ink on a dark background, the digit scaled into 20x20 and centred by its centre of
mass (`digitflow predict` prepares arbitrary image files that way). It is a small, transparent
reference model for the digitflow pipeline: teaching, testing the tooling around it, baselines."""

LIMITATIONS = """\
- Trained on MNIST only: digits written in the 1990s by US Census Bureau employees and US high
  school students. Other handwriting styles, other digit forms, printed digits and photographs are
  untested, and accuracy on them will be lower than the test figure above.
- It always answers one of 0-9: there is no "not a digit" class, and it can be confidently wrong
  on letters, blank scans or noise. The probabilities are not calibrated.
- A fully connected network: it does not know that neighbouring pixels belong together, so large
  shifts, rotations and unusually thick or thin strokes hurt (training used shifts of a pixel).
- Not evaluated for fairness or robustness to adversarial input; do not use it for decisions
  about people."""


def model_card(
    version: str,
    metrics: dict[str, Any],
    provenance: dict[str, Any],
    figures: list[tuple[str, str]] = (),
) -> str:
    config = provenance["config"]
    network, training = config["network"], config["training"]
    layers = "-".join(str(n) for n in network["layer_sizes"])
    data = provenance["data"]
    run = provenance.get("flow_run") or {}
    accuracy = metrics["test_accuracy"]
    registry = provenance.get("registry") or "data/models"
    spec = f"{registry}@{version}"
    sections = [
        f"# digitflow MNIST digit classifier, {version}",
        "",
        f"A fully connected network ({layers}, {network['activation']}) written from scratch in "
        f"NumPy and trained by the digitflow pipeline. **Test accuracy {accuracy:.2%}** on the "
        f"{metrics['test_examples']:,} MNIST test images. Trained "
        f"{provenance['timestamps']['finished_training']} by Prefect flow run "
        f"`{run.get('name', '?')}` ({run.get('id', '?')}), code "
        f"`{(provenance.get('git') or {}).get('commit') or 'unknown'}`.",
        "",
        table(
            ["training", "value"],
            [
                ["epochs run", metrics["training"]["epochs"]],
                ["best epoch (weights kept)", metrics["training"]["best_epoch"]],
                ["training time", f"{metrics['training']['train_seconds']:.1f} s"],
                ["final training loss", f"{metrics['training']['final_loss']:.4f}"],
            ],
        ),
        "",
        evaluation_markdown(metrics, title="Evaluation on the MNIST test set"),
        "### Per class",
        "",
        table(
            ["digit", "precision", "recall", "support"],
            [list(row.values()) for row in per_class_rows(metrics)],
        ),
        "",
    ]
    if metrics.get("champion_challenger"):
        sections += [champion_markdown(metrics["champion_challenger"]), ""]
    if figures:
        sections += ["## Figures", ""]
        for caption, path in figures:
            sections += [f"### {caption}", "", f"![{caption}]({path})", ""]
    sections += [
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Limitations",
        "",
        LIMITATIONS,
        "",
        "## Configuration",
        "",
        table(["network", "value"], network.items()),
        "",
        table(["training", "value"], training.items()),
        "",
        "## Data",
        "",
        table(
            ["split", "rows", "sha256 (raw Parquet)"],
            [[split, f["rows"], f"`{f['sha256']}`"] for split, f in data["raw"].items()],
        ),
        "",
        f"Source: `{data['source']}`, revision `{data.get('revision') or 'default'}`.",
        "",
        "## Files",
        "",
        table(["file", "what it holds"], FILES.items()),
        "",
        "## How to use",
        "",
        "```bash",
        f"digitflow models show {version} --registry {registry}   # verifies every checksum",
        f"digitflow predict scans/ --model {spec}",
        "```",
        "",
        "```python",
        "from flows.registry.versions import load_published",
        f'model = load_published("{spec}")   # refuses a tampered file',
        "```",
        "",
        "```python",
        "import onnxruntime, numpy as np",
        'session = onnxruntime.InferenceSession("model.onnx")',
        'probabilities, = session.run(["probabilities"], {"pixels": pixels_uint8_n_by_784})',
        "```",
        "",
    ]
    return "\n".join(sections)
