"""Moving aliases on purpose: promoting a version, rolling an alias back, and the
champion/challenger rule that decides whether a newly trained version becomes `production`.

    entry = promote("data/models", "v4", reason="passed review", by=cli_actor())
    entry = rollback("data/models")                  # production back to the holder before
    promote_it, why = decide("if-not-worse", "v3", accuracy_delta=-0.0004, p_value=0.62)

Every move is verified first (the version it names passes its checksums) and recorded as an entry
of the alias history (flows/registry/aliases.py).

The rule compares the new version (the challenger) with the current `production` version (the
champion) on the same test set; the exact McNemar test on the images only one of them gets right
says whether a difference is more than noise (netcore.metrics.compare_predictions):

    never         production never moves by training
    if-better     only a significant improvement (accuracy up, p < 0.05) moves it
    if-not-worse  anything but a significant regression (accuracy down, p < 0.05) moves it
    always        every published version moves it

With no champion (an empty registry, or a registry whose production and latest name nothing), any
rule but `never` promotes: the first version that passes the accuracy gate becomes production.
"""

from __future__ import annotations

from typing import Any

from flows.registry.aliases import (
    ANYTHING,
    PRODUCTION,
    AliasMoved,
    cli_actor,
    move_alias,
    read_history,
)
from flows.registry.store import RegistryError
from flows.registry.versions import load_published

POLICIES = ("never", "if-better", "if-not-worse", "always")
DEFAULT_POLICY = "if-not-worse"
SIGNIFICANCE = 0.05
ROLLBACK_ATTEMPTS = 20  # a rollback racing other moves reads the history again this often


def promote(
    registry: str,
    version: str,
    alias: str = PRODUCTION,
    reason: str = "",
    by: str | None = None,
    expect: str | None = ANYTHING,
) -> dict[str, Any]:
    """Point `alias` at `version` (v3, 3, or an alias such as latest) after verifying every
    checksum of it; returns the history entry. With `expect`, only if the alias still holds that
    (None: it was never set), else AliasMoved."""
    model = load_published(f"{registry}@{version}")
    reason = reason or f"promoted {model.version} by hand"
    return move_alias(registry, alias, model.version, "promote", reason, by or cli_actor(), expect)


def rollback(
    registry: str, alias: str = PRODUCTION, reason: str = "", by: str | None = None
) -> dict[str, Any]:
    """Move `alias` back to the holder before its current one, verified first; recorded as a
    move of its own. Repeated rollbacks keep going back."""
    for _ in range(ROLLBACK_ATTEMPTS):
        history = read_history(registry)
        current, target = history.holder(alias), history.rollback_target(alias)
        if current is None:
            raise RegistryError(f"{registry}: {alias} was never promoted; nothing to roll back")
        if target is None:
            raise RegistryError(
                f"{history.set_by(alias)}: {alias} had no holder before {current}; nothing to "
                "roll back to (promote a version instead)"
            )
        load_published(f"{registry}@{target}")
        why = reason or f"rolled back from {current}"
        try:
            return move_alias(registry, alias, target, "rollback", why, by or cli_actor(), current)
        except AliasMoved:
            continue  # someone moved it meanwhile: decide again on the new history
    raise RegistryError(f"{registry}: {alias} kept moving; rollback gave up, try again")


def decide(
    policy: str, champion: str | None, accuracy_delta: float | None, p_value: float | None
) -> tuple[bool, str]:
    """Whether a challenger that passed the accuracy gate becomes production under `policy`,
    and why, in words. `accuracy_delta` is challenger minus champion."""
    if policy not in POLICIES:
        raise ValueError(f"unknown promotion policy {policy!r}; one of {', '.join(POLICIES)}")
    if policy == "never":
        return False, "--promote never"
    if policy == "always":
        return True, "--promote always"
    if champion is None or accuracy_delta is None or p_value is None:
        return True, f"{policy}: no production version to compare with, the first one becomes it"
    difference = f"{difference_text(accuracy_delta, p_value)} against {champion}"
    significant = p_value < SIGNIFICANCE
    if policy == "if-better":
        better = significant and accuracy_delta > 0
        verdict = "significantly better" if better else "not significantly better"
        return better, f"if-better: {verdict} ({difference})"
    worse = significant and accuracy_delta < 0
    verdict = "significantly worse" if worse else "not significantly worse"
    return not worse, f"if-not-worse: {verdict} ({difference})"


def difference_text(accuracy_delta: float, p_value: float) -> str:
    """'+0.12 pp, p = 0.031': an accuracy difference in percentage points and its p-value."""
    return f"{accuracy_delta * 100:+.2f} pp, p = {p_value:.2g}"
