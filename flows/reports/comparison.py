"""Two classifiers on the same test set, side by side: the champion/challenger comparison of a
training run (its Prefect artifact, the model card) and `digitflow models compare`.

    comparison = compare_versions(labels, ("v2", first), ("v3", second), "500 test images ...")
    comparison_markdown(comparison)   # accuracies, delta, agreement, discordant pairs, p, per digit
    comparison_text(comparison)       # the same for a terminal
    page = write_comparison_page("compare.html", comparison, pixels, labels, first, second)
    champion_markdown(record)         # a training run's champion/challenger record, decision first
    skipped_text(same)                # why a scheduled run did not train

`first` and `second` are each classifier's predicted classes `(n,)`; the statistics are
netcore.metrics.compare_predictions (the exact McNemar test on the images only one of them got
right), `accuracy_delta` is second minus first.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from flows.registry.promotion import SIGNIFICANCE, difference_text
from flows.reports import figures
from flows.reports.inline import Figure, Table, html_page
from flows.reports.markdown import table
from netcore.io import write_atomic
from netcore.metrics import compare_predictions


def compare_versions(
    labels: np.ndarray,
    first: tuple[str, np.ndarray],
    second: tuple[str, np.ndarray],
    test_set: str,
) -> dict[str, Any]:
    """The statistics of two (name, predictions) pairs on `labels`, with their names and a
    description of the test set, as plain JSON."""
    (first_name, first_predictions), (second_name, second_predictions) = first, second
    statistics = compare_predictions(labels, first_predictions, second_predictions)
    return {"first": first_name, "second": second_name, "test_set": test_set, **statistics}


def verdict(comparison: dict[str, Any]) -> str:
    """One sentence: is the difference more than noise?"""
    p_value, delta = comparison["p_value"], comparison["accuracy_delta"]
    if p_value >= SIGNIFICANCE or delta == 0:
        return f"no significant difference (p = {p_value:.2g}, threshold {SIGNIFICANCE})"
    better = comparison["second"] if delta > 0 else comparison["first"]
    return f"{better} is significantly better (p = {p_value:.2g} < {SIGNIFICANCE})"


def _per_digit(comparison: dict[str, Any]) -> list[list[Any]]:
    """Rows of digit, each one's recall, the difference and the number of images."""
    return [
        [
            row["digit"],
            f"{row['first_recall']:.2%}",
            f"{row['second_recall']:.2%}",
            f"{row['recall_delta'] * 100:+.2f} pp",
            row["support"],
        ]
        for row in comparison["per_class"]
    ]


def comparison_markdown(comparison: dict[str, Any], title: str | None = None) -> str:
    first, second = comparison["first"], comparison["second"]
    discordant = comparison["only_first_right"] + comparison["only_second_right"]
    difference = difference_text(comparison["accuracy_delta"], comparison["p_value"])
    return "\n".join(
        [
            f"## {title or f'{second} against {first}'}",
            "",
            f"On {comparison['test_set']}: **{second} {difference}** against {first}; "
            f"{verdict(comparison)}.",
            "",
            table(
                ["", first, second],
                [
                    [
                        "test accuracy",
                        f"{comparison['first_accuracy']:.2%}",
                        f"{comparison['second_accuracy']:.2%}",
                    ],
                    [
                        "images only this one got right",
                        comparison["only_first_right"],
                        comparison["only_second_right"],
                    ],
                ],
            ),
            "",
            f"Both give the same answer on {comparison['agreement']:.2%} of the "
            f"{comparison['examples']:,} images. The exact McNemar test looks only at the "
            f"{discordant:,} images exactly one of them got right: if both were equally good, "
            f"each would be either kind with probability 1/2 (p = {comparison['p_value']:.2g}).",
            "",
            "### Recall per digit",
            "",
            table(["digit", first, second, "difference", "images"], _per_digit(comparison)),
            "",
        ]
    )


def champion_markdown(record: dict[str, Any]) -> str:
    """A training run's champion/challenger record (flows.training.champion) as Markdown: the
    decision, then the comparison (the compare stage's Prefect artifact, the model card)."""
    decision = "promote" if record["promote"] else "keep the champion"
    lines = [
        "## Champion and challenger",
        "",
        f"Rule `--promote {record['policy']}`: **{decision}** ({record['reason']}). Whether "
        "production moved is in the registry's alias history (`digitflow models history`).",
        "",
    ]
    comparison = record["comparison"]
    if comparison is None:
        lines.append("There was no production version to compare with.")
    else:
        champion = f"{record['champion_alias']} {record['champion']}"
        lines.append(comparison_markdown(comparison, f"This run against {champion}"))
    return "\n".join([*lines, ""])


def skipped_text(same: dict[str, str]) -> str:
    """What a scheduled run that did not train says (its log, its summary): `same` is the
    version ({"version", "alias"}) trained on the same data with the same configuration."""
    return (
        f"skipped: nothing new to learn, {same['alias']} {same['version']} was trained on the "
        "same data with the same configuration (digitflow serve --force trains anyway)"
    )


def skipped_markdown(same: dict[str, str]) -> str:
    return f"# Scheduled training skipped\n\n{skipped_text(same)}.\n"


def comparison_text(comparison: dict[str, Any]) -> str:
    """The comparison for a terminal."""
    first, second = comparison["first"], comparison["second"]
    lines = [
        f"{second} against {first} on {comparison['test_set']}",
        f"  test accuracy   {comparison['first_accuracy']:.2%} -> "
        f"{comparison['second_accuracy']:.2%} "
        f"({difference_text(comparison['accuracy_delta'], comparison['p_value'])})",
        f"  agreement       {comparison['agreement']:.2%} of {comparison['examples']:,} images",
        f"  only right      {comparison['only_first_right']} by {first}, "
        f"{comparison['only_second_right']} by {second} (exact McNemar test on these)",
        f"  verdict         {verdict(comparison)}",
        "  recall          "
        + "  ".join(
            f"{row['digit']}:{row['recall_delta'] * 100:+.1f}" for row in comparison["per_class"]
        )
        + " (pp per digit)",
    ]
    return "\n".join(lines)


def disagreements(
    labels: np.ndarray, first: np.ndarray, second: np.ndarray, count: int
) -> list[int]:
    """Up to `count` indices of images exactly one classifier got right: the two kinds in turn
    (only first right, only second right), in test-set order."""
    only_first = np.flatnonzero((first == labels) & (second != labels)).tolist()
    only_second = np.flatnonzero((second == labels) & (first != labels)).tolist()
    chosen: list[int] = []
    while (only_first or only_second) and len(chosen) < count:
        for kind in (only_first, only_second):
            if kind and len(chosen) < count:
                chosen.append(kind.pop(0))
    return chosen


def comparison_page(
    comparison: dict[str, Any],
    pixels: np.ndarray,
    labels: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    workdir: Path,
) -> str:
    """The HTML page of `digitflow models compare`: the numbers, the confusion-matrix difference
    and the images one got right and the other wrong, drawn into `workdir` and inlined."""
    first_name, second_name = comparison["first"], comparison["second"]
    difference = np.asarray(comparison["confusion_difference"])
    heatmap = figures.confusion_difference(
        difference, workdir / "difference.png", first_name, second_name
    )
    chosen = disagreements(labels, first, second, figures.GRID_COLUMNS * figures.GRID_ROWS)
    captions = [
        f"true {labels[i]}\n{first_name}: {first[i]}, {second_name}: {second[i]}" for i in chosen
    ]
    title = (
        f"Right by one, wrong by the other ({comparison['only_first_right']} only by "
        f"{first_name}, {comparison['only_second_right']} only by {second_name})"
    )
    images = np.asarray(pixels)[chosen].reshape(len(chosen), 28, 28)
    grid = figures.image_grid(list(images), captions, workdir / "disagreements.png", title)
    items: list[Figure] = [
        (
            f"Confusion matrix of {second_name} minus {first_name} (outlined: the right answers)",
            heatmap,
        ),
        ("Test images exactly one of them got right", grid),
    ]
    summary = [
        ("test set", comparison["test_set"]),
        (f"accuracy of {first_name}", f"{comparison['first_accuracy']:.2%}"),
        (f"accuracy of {second_name}", f"{comparison['second_accuracy']:.2%}"),
        ("difference", difference_text(comparison["accuracy_delta"], comparison["p_value"])),
        ("verdict", verdict(comparison)),
        ("agreement", f"{comparison['agreement']:.2%}"),
        (f"only {first_name} right", comparison["only_first_right"]),
        (f"only {second_name} right", comparison["only_second_right"]),
    ]
    headers = ("digit", first_name, second_name, "difference", "images")
    tables: list[Table] = [
        ("Summary", (), summary),
        ("Recall per digit", headers, _per_digit(comparison)),
    ]
    subtitle = "exact McNemar test on the images exactly one of them got right"
    return html_page(f"{second_name} against {first_name}", subtitle, tables, items)


def write_comparison_page(
    output: str | Path,
    comparison: dict[str, Any],
    pixels: np.ndarray,
    labels: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
) -> str:
    """Write comparison_page to `output` atomically (its figures drawn in a temporary folder);
    returns the page."""
    with tempfile.TemporaryDirectory(prefix="digitflow-compare-") as work:
        page = comparison_page(comparison, pixels, labels, first, second, Path(work))
    write_atomic(output, lambda temporary: temporary.write_text(page, encoding="utf-8"))
    return page
