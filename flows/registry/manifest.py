"""A published version's manifest.json: what the version holds, where it came from, and the sha256
of every file, so that any change after publishing is detected.

    write_manifest(folder, "v3", provenance)   # in a local folder being published
    manifest = verify("data/models/v3")         # every checksum, or RegistryError naming the file
    manifest = read_manifest("s3://bucket/models/v3")   # parsed, not verified
    network_facts(manifest["config"]["network"])   # {"arch": "cnn", "layers": ..., ...}
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from flows.registry.store import RegistryError, display, open_location, sha256_on
from netcore.config import NetworkConfig
from netcore.io import sha256_file
from netcore.weights import CONFIG_FILE, WEIGHTS_FILE

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "digitflow-model/1"


def write_manifest(folder: Path, version: str, provenance: dict[str, Any]) -> dict[str, Any]:
    """Write `folder`/manifest.json: the format, the version, the time, `provenance`, and the
    sha256 and size of every other file under `folder`; returns it."""
    files = {
        path.relative_to(folder).as_posix(): {
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
        }
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": version,
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **provenance,
        "files": files,
    }
    (folder / MANIFEST_FILE).unlink(missing_ok=True)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(location: str, shown_as: str | None = None) -> dict[str, Any]:
    """The manifest of the version folder at `location`, parsed and shape-checked (not verified);
    errors name it as `shown_as` (where `location` is a local copy)."""
    fs, folder = open_location(location)
    shown = f"{shown_as or display(fs, folder)}/{MANIFEST_FILE}"
    try:
        manifest = json.loads(fs.cat_file(f"{folder}/{MANIFEST_FILE}"))
    except FileNotFoundError:
        raise RegistryError(f"{shown}: missing; not a published version") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise RegistryError(f"{shown}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise RegistryError(f"{shown}: has no 'files' table of checksums")
    return manifest


def verify(location: str, shown_as: str | None = None) -> dict[str, Any]:
    """Check every file listed in the version's manifest against its sha256; returns the
    manifest, or raises RegistryError naming the first missing or changed file (as `shown_as`,
    where `location` is a local copy of it)."""
    manifest = read_manifest(location, shown_as)
    fs, folder = open_location(location)
    location = shown_as or location
    for required in (WEIGHTS_FILE, CONFIG_FILE):
        if required not in manifest["files"]:
            raise RegistryError(f"{location}/{MANIFEST_FILE}: does not list {required}")
    for name, entry in manifest["files"].items():
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts:
            raise RegistryError(f"{location}/{MANIFEST_FILE}: lists a path outside the version")
        shown = f"{location}/{name}"
        try:
            digest = sha256_on(fs, f"{folder}/{name}")
        except FileNotFoundError:
            raise RegistryError(f"{shown}: missing (listed in {MANIFEST_FILE})") from None
        if digest != entry.get("sha256"):
            raise RegistryError(
                f"{shown}: checksum mismatch, the file changed after publishing "
                f"(manifest {str(entry.get('sha256'))[:12]}..., file {digest[:12]}...); "
                f"refusing to use this version"
            )
    return manifest


ARCH_NAMES = {"mlp": "fully connected (MLP)", "cnn": "convolutional (CNN)"}


def network_facts(network: dict[str, Any] | None) -> dict[str, Any]:
    """What a manifest's (or config.json's) network config says about the architecture, for
    listings, pages and model cards: {"arch" ("mlp" or "cnn"), "arch_name" (in words), "layers"
    (NetworkConfig.describe(): "784-128-10 relu", "conv5x5x16-pool-...-10"), "parameters",
    "flops_per_image" (one forward pass, netcore's count), "summary" (the last three in words)}.
    Every value is None when there is no network config netcore can read (a version published
    without one, or a damaged manifest)."""
    unknown = dict.fromkeys(
        ("arch", "arch_name", "layers", "parameters", "flops_per_image", "summary")
    )
    if not network:  # NetworkConfig's defaults would describe a network nobody published
        return unknown
    try:
        config = NetworkConfig.from_dict(network)
    except (TypeError, ValueError, AttributeError):
        return unknown
    arch_name = ARCH_NAMES.get(config.arch, config.arch)
    parameters, flops = config.num_params(), config.flops_per_image()
    return {
        "arch": config.arch,
        "arch_name": arch_name,
        "layers": config.describe(),
        "parameters": parameters,
        "flops_per_image": flops,
        "summary": f"{arch_name}, {parameters:,} parameters, {flops / 1e6:.2f} MFLOP per image",
    }
