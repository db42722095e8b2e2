"""Champion and challenger: whether a newly trained version should replace `production`, and
whether a scheduled run has anything new to learn at all.

    same = unchanged_version(registry, fingerprint, "mlp", [128], "relu", training)   # or None
    record = compare_with_champion(prepared, RunFolder.of(key), registry, "if-not-worse")
    promotion = promote_run(registry, "v4", record, flow_run_id)   # after publishing
    pixels, labels, described = test_set()        # for `digitflow models compare`

The champion is the current `production` version (until a first promotion, `latest`). The
challenger's test predictions (the evaluate stage's) are compared with the champion's on the
same prepared test set (flows/reports/comparison.py, the exact McNemar test), and the promotion
rule (flows/registry/promotion.decide) says whether it should move production. The record goes
into the run's metrics.json, so the published version, its model card and the Prefect artifact
carry it. The move itself happens after publishing, and only if production still names the
champion it was compared with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from flows.paths import RunFolder, processed_dir
from flows.registry.aliases import LATEST, PRODUCTION, AliasMoved, flow_actor, read_history
from flows.registry.manifest import read_manifest
from flows.registry.promotion import decide, promote
from flows.registry.versions import PublishedModel, list_versions, load_published, resolve
from flows.reports.comparison import compare_versions
from flows.training.download import DownloadError, mnist_source, source_kind, split_files
from flows.training.prepare import load_split
from flows.training.run_config import requested_configs
from netcore.config import NetworkConfig, TrainConfig
from netcore.io import write_json
from netcore.mnist import read_parquet
from netcore.network import Network
from netcore.preprocess import normalize

CHALLENGER = "challenger"  # the new version's name in a comparison (its number comes later)
KINDS = ("pixels", "labels")  # the arrays of a prepared split


def champion(registry: str) -> PublishedModel | None:
    """The current production version, verified (latest until a first promotion); None for a
    registry without published versions."""
    if not list_versions(registry):
        return None
    return load_published(f"{registry}@{PRODUCTION}")


def predicted_classes(network: Network, pixels: np.ndarray) -> np.ndarray:
    """The class `network` predicts for each uint8 image row `(n, 784)`."""
    return network.predict_proba(normalize(pixels, network.config)).argmax(axis=1)


def compare_with_champion(
    prepared: dict[str, Any], run: RunFolder, registry: str, policy: str
) -> dict[str, Any]:
    """Compare the run's test predictions with the champion's on the same test set and decide,
    under `policy`, whether the run's version should become production; the record is added to
    the run's metrics.json (as "champion_challenger") and returned."""
    holder = read_history(registry).holder(PRODUCTION) if list_versions(registry) else None
    current = champion(registry)
    comparison = None
    if current is not None:
        pixels, labels = load_split(prepared, "test")
        challenger = np.load(run.predictions, allow_pickle=False)
        comparison = compare_versions(
            labels,
            (current.version, predicted_classes(current.network, pixels)),
            (CHALLENGER, challenger),
            f"the {len(labels):,} test images of this run",
        )
    promote_it, reason = decide(
        policy,
        current.version if current else None,
        comparison["accuracy_delta"] if comparison else None,
        comparison["p_value"] if comparison else None,
    )
    record = {
        "champion": current.version if current else None,
        "champion_alias": (PRODUCTION if holder else LATEST) if current else None,
        "production": holder,  # what production named when compared: the move expects it
        "policy": policy,
        "promote": promote_it,
        "reason": reason,
        "comparison": comparison,
    }
    metrics = json.loads(run.metrics.read_text())
    write_json(run.metrics, {**metrics, "champion_challenger": record})
    return record


def promote_run(
    registry: str, version: str, record: dict[str, Any], flow_run_id: str
) -> dict[str, Any]:
    """Move production to the just-published `version` if the comparison `record` says so and
    production still names the champion it was compared with; returns {"promoted", "promotion"
    (what happened, in words), "entry" (the history entry, or None)}."""
    if not record["promote"]:
        holder = record["production"] or record["champion"]
        stays = f"production stays {holder}" if holder else "production stays unset"
        return {"promoted": False, "promotion": f"{stays} ({record['reason']})", "entry": None}
    try:
        entry = promote(
            registry,
            version,
            PRODUCTION,
            reason=f"trained and published as {version}; {record['reason']}",
            by=flow_actor(flow_run_id),
            expect=record["production"],
        )
    except AliasMoved as moved:
        return {"promoted": False, "promotion": f"not promoted: {moved}", "entry": None}
    promotion = f"production: {entry['from'] or '-'} -> {version} ({record['reason']})"
    return {"promoted": True, "promotion": promotion, "entry": entry["seq"]}


def unchanged_version(
    registry: str,
    fingerprint: str,
    arch: str,
    hidden: list[int] | None,
    activation: str | None,
    training: dict[str, Any] | None,
) -> dict[str, str] | None:
    """The version (production's, else latest's) trained on the same data (`fingerprint`) with
    the same whole configuration (the architecture, its layers and every training field, as
    flows/training/run_config.requested_configs makes them), as {"version", "alias"}; None when
    there is none, so training has something new to learn. Seeded training is deterministic: a
    rerun would publish the same weights again."""
    if not list_versions(registry):
        return None
    network, train_config = requested_configs(arch, hidden, activation, training)
    wanted = _comparable({"network": network.to_dict(), "training": train_config.to_dict()})
    for alias in (PRODUCTION, LATEST):
        manifest = read_manifest(resolve(registry, alias))
        found = _comparable(manifest.get("config") or {})
        same_data = (manifest.get("data") or {}).get("fingerprint") == fingerprint
        if same_data and found is not None and found == wanted:
            return {"version": manifest.get("version", "?"), "alias": alias}
    return None


def _comparable(config: dict[str, Any]) -> dict[str, Any] | None:
    """A manifest's {"network", "training"} as complete configurations (fields added to netcore
    since it was published read as their defaults, which is what it was trained with), without
    the input scaling (measured from the data, which the fingerprint covers); None when it is
    not a configuration netcore can read."""
    try:
        network = NetworkConfig.from_dict(config["network"]).to_dict()
        training = TrainConfig.from_dict(config["training"]).to_dict()
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    for scaling in ("pixel_mean", "pixel_std"):
        network.pop(scaling)
    return json.loads(json.dumps({"network": network, "training": training}))


def test_set(source: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """MNIST test images and labels to compare versions on, and where they came from: the test
    split of `source` if given (a local folder), else the arrays the last `digitflow train`
    prepared under DIGITFLOW_HOME, else the test split of $DIGITFLOW_MNIST_SOURCE when it is a
    local folder. DownloadError, in one line, when there are none."""
    folder = processed_dir()
    prepared = {
        "files": {f"test_{kind}": {"path": str(folder / f"test_{kind}.npy")} for kind in KINDS}
    }
    if source is None and all(Path(f["path"]).is_file() for f in prepared["files"].values()):
        pixels, labels = load_split(prepared, "test")
        return pixels, labels, f"the {len(labels):,} test images prepared in {folder}"
    source = source or mnist_source()
    if source_kind(source) != "local":
        raise DownloadError(
            f"no MNIST test set to compare on: nothing prepared in {folder} (digitflow train "
            f"prepares it) and the source {source} is not a local folder; pass --source "
            "/path/to/mnist or set DIGITFLOW_MNIST_SOURCE=/path/to/mnist (Parquet files)"
        )
    parts = [read_parquet(path) for path in split_files(source)["test"]]
    pixels = np.concatenate([p for p, _ in parts]).reshape(-1, 784)
    labels = np.concatenate([labels for _, labels in parts])
    return pixels, labels, f"the {len(labels):,} test images of {source}"
