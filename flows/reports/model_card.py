"""The model card: the README.md each published version carries.

    text = model_card("v3", metrics, provenance, figures=[("Confusion matrix", "figures/x.png")])

What the model is, how well it does (test metrics, per class, the confusion matrix), how it was
made (configuration, data with hashes, code version, flow run), what it is for, where it fails,
and how to load it. Figures, when the version has any, are embedded by relative path.
"""

from __future__ import annotations

import math
from typing import Any

from flows.registry.manifest import network_facts
from flows.reports.comparison import champion_markdown
from flows.reports.evaluation import evaluation_markdown, per_class_rows
from flows.reports.markdown import table
from netcore.config import NetworkConfig
from netcore.layers import build_layers

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
- {architecture}
- Not evaluated for fairness or robustness to adversarial input; do not use it for decisions
  about people."""

# What each architecture's own limits are (the third point of LIMITATIONS), and what it is called.
ARCHITECTURE_LIMITS = {
    "mlp": """\
A fully connected network: it does not know that neighbouring pixels belong together, so large
  shifts, rotations and unusually thick or thin strokes hurt (training used shifts of a pixel).""",
    "cnn": """\
A small convolutional network: its filters find strokes wherever they are, and it was trained
  on shifted, rotated, zoomed, sheared, thinner and thicker copies of the digits, so it copes with
  those better than a fully connected network (digits drawn in a paint program, rendered from
  fonts, scanned or photographed: digitflow's docs/benchmarks.md, measured for the recipe, not
  for this version). It still needs one digit per image, prepared as MNIST was: it does not find
  digits in a larger picture.""",
}
NETWORK_NOUN = {"mlp": "fully connected network", "cnn": "convolutional network"}


def model_card(
    version: str,
    metrics: dict[str, Any],
    provenance: dict[str, Any],
    figures: list[tuple[str, str]] = (),
) -> str:
    config = provenance["config"]
    network, training = config["network"], config["training"]
    facts = network_facts(network)
    data = provenance["data"]
    run = provenance.get("flow_run") or {}
    accuracy = metrics["test_accuracy"]
    registry = provenance.get("registry") or "data/models"
    spec = f"{registry}@{version}"
    sections = [
        f"# digitflow MNIST digit classifier, {version}",
        "",
        f"A {NETWORK_NOUN.get(facts['arch'], 'network')} ({facts['layers']}: "
        f"{facts['parameters']:,} parameters, {facts['flops_per_image'] / 1e6:.2f} MFLOP per "
        "image) written from scratch in "
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
        LIMITATIONS.format(architecture=ARCHITECTURE_LIMITS.get(facts["arch"], "")),
        "",
        "## Architecture",
        "",
        table(["layer", "output shape", "parameters"], layer_rows(network)),
        "",
        "## Configuration",
        "",
        # The layer specs are in the table above.
        table(["network", "value"], [(k, v) for k, v in network.items() if k != "layers"]),
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


def layer_rows(network: dict[str, Any]) -> list[tuple[str, str, str]]:
    """One row per layer of a network config: the spec in words, the shape of one example's
    output, its parameter count."""
    config = NetworkConfig.from_dict(network)
    rows = [("input", " x ".join(map(str, config.example_shape)), "")]
    layers = build_layers(config.layer_specs(), config.example_shape)
    for spec, layer in zip(config.layer_specs(), layers, strict=True):
        settings = ", ".join(f"{key} {value}" for key, value in spec.items() if key != "type")
        count = sum(math.prod(shape) for shape in layer.param_shapes.values())
        shape = " x ".join(map(str, layer.output_shape))
        rows.append(
            (
                f"{spec['type']} ({settings})" if settings else spec["type"],
                shape,
                f"{count:,}" if count else "",
            )
        )
    return rows
