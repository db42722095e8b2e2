"""The model registry: immutable, verifiable versions v1, v2, ... at any fsspec location.

    REGISTRY/                 data/models by default; any fsspec URL, e.g. s3://bucket/models
      v1/                     one published version, never changed after publishing
        model.safetensors config.json metrics.json model.onnx README.md [figures/*.png]
        manifest.json         sha256 of every other file, data hashes, provenance
      v2/ ...
      latest                  a text file naming the newest version, e.g. "v2"
      aliases.json history/   named aliases (production, ...) and their history: aliases.py

    published = publish(registry, payload_dir, describe, provenance)   # -> (version, location)
    model = load_published("data/models@v2")   # verifies every checksum first
    load_published("data/models/v2"); load_published()  # a version folder; the default @production
    load_published("data/models@latest"); load_published("data/models@staging")   # aliases

`production` (what predict, report and the scheduler's inbox use by default) falls back to
`latest` until a first promotion, so registries from before aliases keep working.

The manifest (flows/registry/manifest.py) lists every file's sha256; the files are reached
through fsspec (flows/registry/store.py). Publishing is atomic: on a local disk the version is
assembled in REGISTRY/.staging/ and renamed to vN, and a rename onto an existing vN fails, so
concurrent publishers (separate processes included) each get their own number. On object stores,
which cannot rename a folder, a version number is claimed by creating REGISTRY/.claims/vN
exclusively (a conditional PUT on S3), and the claim is never removed, so no other publisher can
take that number again, however stale its listing; manifest.json is written last: a version
without its manifest is not published, and readers skip it (a publisher killed part-way leaves a
claimed number without a version: a gap, never a half version).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from flows.paths import METRICS_FILE, ONNX_FILE, default_registry
from flows.registry.aliases import (
    PRODUCTION,
    VERSION_LIKE,
    VERSION_NAME,
    check_alias_name,
    read_history,
)
from flows.registry.manifest import (
    MANIFEST_FILE,
    network_facts,
    read_manifest,
    verify,
    write_manifest,
)
from flows.registry.store import (
    RegistryError,
    check_bucket,
    create_exclusively,
    display,
    is_local,
    open_location,
    registry_lock,
    storage_errors,
    write_whole,
)
from netcore.errors import ModelFileError
from netcore.io import writing
from netcore.mnist import IMAGE_SIDE, NUM_CLASSES
from netcore.network import Network
from netcore.weights import CONFIG_FILE, load_model

ALIAS = "latest"
DEFAULT_ALIAS = PRODUCTION  # what a spec without @VERSION resolves to
STAGING = ".staging"
CLAIMS = ".claims"  # object stores: one object per version number ever claimed


@dataclass
class PublishedModel:
    version: str  # "v3"
    location: str  # the version folder: a local path or a URL
    network: Network
    manifest: dict[str, Any]
    metrics: dict[str, Any]
    alias: str | None = None  # the alias it was asked for by ("production"), None for a version
    onnx: bytes | None = None  # model.onnx as verified with the manifest; None in versions without


def version_number(name: str) -> int | None:
    match = VERSION_NAME.match(name)
    return int(match.group(1)) if match else None


def _version_dirs(fs: fsspec.AbstractFileSystem, root: str) -> dict[int, str]:
    """Every vN folder, published or not, by number (listed afresh: object-store filesystems
    cache listings, and `exists` answers from them, so a stale one would miss a concurrent
    publisher's version or manifest)."""
    fs.invalidate_cache()
    try:
        entries = fs.ls(root, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found = {}
    for entry in entries:
        number = version_number(PurePosixPath(entry["name"]).name)
        if number is not None and entry["type"] == "directory":
            found[number] = entry["name"]
    return found


def list_versions(registry: str) -> list[str]:
    """Published versions (those with a manifest.json), oldest first."""
    fs, root = open_location(registry)
    return [
        f"v{number}"
        for number, path in sorted(_version_dirs(fs, root).items())
        if fs.exists(f"{path}/{MANIFEST_FILE}")
    ]


def _read_alias(fs: fsspec.AbstractFileSystem, root: str) -> str | None:
    """The version `latest` names (None without the alias); a damaged alias reads as a name no
    version has, never as an exception."""
    alias = f"{root}/{ALIAS}"
    if not fs.exists(alias):
        return None
    try:
        return fs.cat_file(alias).decode(errors="replace").strip()
    except OSError as error:
        raise RegistryError(f"{display(fs, alias)}: cannot read the alias ({error})") from None


def version_summaries(registry: str) -> list[dict[str, Any]]:
    """One line of facts per published version, oldest first, read from the manifests (not
    verified: `load_published` / `digitflow models show` do that)."""
    fs, root = open_location(registry)
    versions = list_versions(registry)
    latest = _read_alias(fs, root)
    aliases: dict[str, list[str]] = {latest: [ALIAS]} if latest else {}
    for name, holder in read_history(registry).holders().items():
        aliases.setdefault(holder, []).append(name)
    rows = []
    for version in versions:
        location = display(fs, f"{root}/{version}")
        manifest = read_manifest(location)
        network = manifest.get("config", {}).get("network", {})
        facts = network_facts(network)
        rows.append(
            {
                "version": version,
                "latest": version == latest,
                "aliases": aliases.get(version, []),
                "published_at": manifest.get("published_at"),
                "test_accuracy": manifest.get("test_accuracy"),
                "arch": facts["arch"],
                "layers": facts["layers"],
                "layer_sizes": network.get("layer_sizes"),
                "epochs": manifest.get("config", {}).get("training", {}).get("epochs"),
                "location": location,
            }
        )
    return rows


def publish(
    registry: str,
    payload_dir: str | Path,
    describe: Callable[[str], dict[str, str]],
    provenance: dict[str, Any],
) -> tuple[str, str]:
    """Publish the files under `payload_dir`, plus the text files `describe(version)` returns
    (e.g. a README.md that names the version), as the next version; returns (version, location).

    manifest.json records `provenance`, the version, the time and the sha256 of every file."""
    fs, root = open_location(registry)
    if is_local(fs):
        version = _publish_local(Path(root), Path(payload_dir), describe, provenance)
    else:
        version = _publish_remote(fs, root, Path(payload_dir), describe, provenance)
    update_alias(registry)
    return version, display(fs, f"{root}/{version}")


def _finish_version(
    folder: Path, version: str, describe: Callable[[str], dict[str, str]], provenance: dict
) -> None:
    """Write the version-dependent files and manifest.json into a local folder (again, on a
    retry with the next version number), then make every file read-only."""
    for name, text in describe(version).items():
        (folder / name).unlink(missing_ok=True)
        (folder / name).write_text(text)
    write_manifest(folder, version, provenance)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o444)  # published files are never edited


def _publish_local(
    root: Path, payload: Path, describe: Callable[[str], dict[str, str]], provenance: dict
) -> str:
    staging = root / STAGING / uuid.uuid4().hex
    # Staging is removed whatever happens from here on: a full disk during the copy used to leave
    # the partial copy behind, keeping the disk full (issue 12). (A SIGKILL still leaves it.)
    try:
        with writing(root):
            staging.parent.mkdir(parents=True, exist_ok=True)
            copy_files(payload, staging)
        while True:
            number = max(_version_dirs(LocalFileSystem(), str(root)), default=0) + 1
            version = f"v{number}"
            with writing(root):
                _finish_version(staging, version, describe, provenance)
            try:
                # The commit and the lock in one step: rename fails if vN exists and is not empty.
                os.rename(staging, root / version)
                return version
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise RegistryError(f"{root / version}: cannot publish ({error})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish_remote(
    fs: fsspec.AbstractFileSystem,
    root: str,
    payload: Path,
    describe: Callable[[str], dict[str, str]],
    provenance: dict,
) -> str:
    fs.makedirs(f"{root}/{CLAIMS}", exist_ok=True)
    while True:
        version = f"v{max(_claimed_numbers(fs, root), default=0) + 1}"
        if create_exclusively(fs, f"{root}/{CLAIMS}/{version}"):
            break
    fs.makedirs(f"{root}/{version}", exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / version
        with writing(folder):
            copy_files(payload, folder)
            _finish_version(folder, version, describe, provenance)
        names = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
        names.remove(MANIFEST_FILE)
        for name in [*names, MANIFEST_FILE]:  # the manifest last: it marks the version complete
            fs.put_file(str(folder / name), f"{root}/{version}/{name}")
    return version


def _claimed_numbers(fs: fsspec.AbstractFileSystem, root: str) -> set[int]:
    """Every version number claimed on an object store, or present as a folder (versions
    published before claims were kept), listed afresh."""
    fs.invalidate_cache(f"{root}/{CLAIMS}")
    try:
        claims = fs.ls(f"{root}/{CLAIMS}", detail=False)
    except FileNotFoundError:
        claims = []
    numbers = {version_number(PurePosixPath(claim).name) for claim in claims}
    return {n for n in numbers if n is not None} | set(_version_dirs(fs, root))


def copy_files(source: Path, destination: Path) -> None:
    """Copy every file under `source` to the same place under `destination`. (shutil.copytree
    would gather a full disk's errors into one shutil.Error that has no errno.)"""
    for path in sorted(source.rglob("*")):
        if path.is_file():
            target = destination / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def update_alias(registry: str) -> str | None:
    """Point `latest` at the newest published version (under a lock, so that of two concurrent
    publishers the later update cannot go back to the older version)."""
    fs, root = open_location(registry)
    with registry_lock(fs, root):
        versions = list_versions(registry)
        if not versions:
            return None
        newest = versions[-1]
        if is_local(fs):
            write_whole(fs, f"{root}/{ALIAS}", (newest + "\n").encode())
            return newest
    # On object stores there is no lock: write the newest version seen, then look again, until
    # no newer one has appeared. The last publisher to finish sees every manifest, so `latest`
    # ends at the newest version whatever order the writes land in.
    while True:
        write_whole(fs, f"{root}/{ALIAS}", (newest + "\n").encode())
        seen = list_versions(registry)[-1]
        if seen == newest:
            return newest
        newest = seen


def split_spec(spec: str) -> tuple[str, str | None]:
    """ "REGISTRY_OR_PATH[@NAME]" -> (location, NAME or None). NAME is a version (vN, or N for
    short) or an alias (latest, production, any name `digitflow models promote` set)."""
    base, at, name = spec.rpartition("@")
    if not at or "/" in name:
        return spec, None
    if version_number(name) is not None or name == ALIAS:
        return base, name
    if name.isdigit() and int(name) > 0:
        return base, f"v{int(name)}"
    if not VERSION_LIKE.match(name):
        try:
            return base, check_alias_name(name)
        except RegistryError:
            pass
    raise RegistryError(
        f"{spec}: {name!r} is not a version or an alias (use v3 or 3, latest, production, or an "
        "alias set with digitflow models promote)"
    )


def resolve(registry: str, version: str = ALIAS) -> str:
    """The folder of `version` (a version name or an alias) in `registry`, as a local path or a
    URL."""
    fs, root = open_location(registry)
    published, folders = list_versions(registry), _version_dirs(fs, root)
    if not published and not folders:
        what = "does not exist" if not fs.exists(root) else "has no published versions"
        raise RegistryError(
            f"{registry}: not a model registry ({what}; expected folders v1, v2, ... each with "
            f"a {MANIFEST_FILE}) and not a version folder"
        )
    if version != ALIAS and version_number(version) is None:
        version = _alias_holder(registry, version, published)
    if version == ALIAS:
        if (named := _read_alias(fs, root)) is not None:
            version = named
        elif published:
            version = published[-1]
        else:
            raise RegistryError(f"{registry}: has no published versions")
    if version not in published:
        if version_number(version) in folders:
            raise RegistryError(
                f"{display(fs, folders[version_number(version)])}/{MANIFEST_FILE}: missing; "
                f"{version} is incomplete or damaged, not a published version"
            )
        raise RegistryError(
            f"{registry}: no published version {version} "
            f"(available: {', '.join(published) or 'none'})"
        )
    return display(fs, f"{root}/{version}")


def _alias_holder(registry: str, alias: str, published: list[str]) -> str:
    """The version a named alias holds (its history verified first); `production` before a first
    promotion is `latest`."""
    history = read_history(registry)
    holder = history.holder(alias)
    if holder is None:
        if alias == PRODUCTION:
            return ALIAS
        known = ", ".join(history.holders()) or "none yet"
        raise RegistryError(
            f"{registry}: {alias!r} is not a version, and no alias of that name was ever set "
            f"(aliases: {known}; use latest, production, v3 or 3)"
        )
    if holder not in published:
        raise RegistryError(
            f"{history.set_by(alias)}: {alias} names {holder}, which is not a published version "
            f"in {registry} (available: {', '.join(published) or 'none'}); move it with "
            "digitflow models promote or rollback"
        )
    return holder


def load_published(spec: str | None = None) -> PublishedModel:
    """Load a published version after verifying every checksum.

    `spec` is "REGISTRY_OR_PATH[@NAME]": a registry (default: the default registry) and a
    version or alias (default production, which is latest until a first promotion), or a path
    straight to a version folder. The result records the alias it was asked for by."""
    base, version = split_spec(spec or default_registry())
    with storage_errors(base):
        return _load(base, version)


def _load(base: str, version: str | None) -> PublishedModel:
    fs, root = open_location(base)
    check_bucket(fs, root)
    if fs.exists(f"{root}/{MANIFEST_FILE}"):
        if version not in (None, ALIAS):
            raise RegistryError(f"{base} is a version folder itself; leave out '@{version}'")
        location, alias = display(fs, root), None
    else:
        name = version or DEFAULT_ALIAS
        location = resolve(base, name)
        alias = name if version_number(name) is None else None
    if is_local(fs):
        return _load_verified(location, location, alias)
    with tempfile.TemporaryDirectory() as tmp:
        # Verify and load the same bytes: a local copy, so nothing can change in between.
        fs.get(open_location(location)[1] + "/", tmp + "/", recursive=True)
        return _load_verified(tmp, location, alias)


def _load_verified(folder: str, location: str, alias: str | None) -> PublishedModel:
    """Verify and load the version copied to `folder` (or living there); errors name files by
    `location`, where the version is published."""
    manifest = verify(folder, shown_as=location)
    try:
        network = load_model(folder)  # every tensor and config field checked
    except ModelFileError as error:
        raise ModelFileError(error.path.replace(folder, location, 1), error.problem) from None
    config = network.config
    if (config.input_size, config.num_classes) != (IMAGE_SIDE * IMAGE_SIDE, NUM_CLASSES):
        raise ModelFileError(
            f"{location}/{CONFIG_FILE}",
            f"a network of {config.input_size} inputs and {config.num_classes} classes is no "
            f"digit classifier ({IMAGE_SIDE}x{IMAGE_SIDE} pixels in, {NUM_CLASSES} digits out)",
        )
    metrics_path = Path(folder) / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    version = manifest.get("version", "?")
    onnx_path = Path(folder) / ONNX_FILE
    onnx = onnx_path.read_bytes() if onnx_path.is_file() else None
    return PublishedModel(version, location, network, manifest, metrics, alias, onnx)
