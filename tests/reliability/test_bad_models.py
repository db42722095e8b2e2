"""Damaged model versions and registries given to the real CLI: each is refused with one line
naming the file (or the registry) and the problem, never a traceback, never used.

Each case damages its own copy of the reference run's registry, then asks `digitflow models show`
(which verifies every checksum, as every load does). "Consistent" tampering also rewrites the
manifest's checksum, as someone editing the registry by hand would: the checksums cannot catch
that (they are not signatures), the model loader must. And `digitflow predict`, given tampered
weights, refuses them before scoring anything.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.processes import assert_one_line_error, cli_env, digitflow, digitflow_all

Case = Callable[[Path], list[str]]  # damages a registry copy; returns the CLI arguments


def writable(path: Path) -> Path:
    path.chmod(0o644)  # published files are read-only
    return path


def flip_byte(path: Path, at: int = -100) -> None:
    data = bytearray(writable(path).read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_manifest(registry: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = writable(registry / "v1" / "manifest.json")
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def rehash(registry: Path, name: str) -> None:
    """Record the file's new sha256 in the manifest: tampering the checksums cannot see."""
    digest = hashlib.sha256((registry / "v1" / name).read_bytes()).hexdigest()
    edit_manifest(registry, lambda m: m["files"][name].update(sha256=digest))


def show(registry: Path, version: str = "v1") -> list[str]:
    return ["models", "show", version, "--registry", str(registry)]


def _weights_bit_flip(registry: Path) -> list[str]:
    flip_byte(registry / "v1" / "model.safetensors")
    return show(registry)


def _weights_truncated_consistently(registry: Path) -> list[str]:
    path = writable(registry / "v1" / "model.safetensors")
    path.write_bytes(path.read_bytes()[:500])
    rehash(registry, "model.safetensors")
    return show(registry)


def _config_edited(registry: Path) -> list[str]:
    path = writable(registry / "v1" / "config.json")
    path.write_text(path.read_text().replace('"relu"', '"tanh"'))
    return show(registry)


def _config_edited_consistently(registry: Path) -> list[str]:
    path = writable(registry / "v1" / "config.json")
    config = json.loads(path.read_text())
    config["network"]["layer_sizes"] = [784, 64, 10]
    path.write_text(json.dumps(config))
    rehash(registry, "config.json")
    return show(registry)


def _manifest_checksum_changed(registry: Path) -> list[str]:
    edit_manifest(registry, lambda m: m["files"]["metrics.json"].update(sha256="0" * 64))
    return show(registry)


def _manifest_not_json(registry: Path) -> list[str]:
    writable(registry / "v1" / "manifest.json").write_text('{"files": {"model.safet')
    return show(registry)


def _manifest_deleted(registry: Path) -> list[str]:
    (registry / "v1" / "manifest.json").unlink()
    return show(registry)


def _manifest_points_outside(registry: Path) -> list[str]:
    edit_manifest(registry, lambda m: m["files"].update({"../../etc/passwd": {"sha256": "0"}}))
    return show(registry)


def _manifest_forgets_the_weights(registry: Path) -> list[str]:
    edit_manifest(registry, lambda m: m["files"].pop("model.safetensors"))
    return show(registry)


def _listed_file_deleted(registry: Path) -> list[str]:
    (registry / "v1" / "model.onnx").unlink()
    return show(registry)


def _alias_names_nothing(registry: Path) -> list[str]:
    writable(registry / "latest").write_text("v7\n")
    return show(registry, "latest")


def _alias_garbage(registry: Path) -> list[str]:
    writable(registry / "latest").write_bytes(b"\xff\xfe../../etc\n")
    return show(registry, "latest")


def _alias_is_a_folder(registry: Path) -> list[str]:
    (registry / "latest").unlink()
    (registry / "latest").mkdir()
    return show(registry, "latest")


def _folder_of_other_files(registry: Path) -> list[str]:
    shutil.rmtree(registry)
    (registry / "photos").mkdir(parents=True)
    (registry / "photos" / "cat.png").write_bytes(b"\x89PNG")
    return show(registry)


def _a_file(registry: Path) -> list[str]:
    shutil.rmtree(registry)
    registry.write_text("not a registry")
    return show(registry)


CASES: dict[str, tuple[Case, tuple[str, ...]]] = {
    "weights bit flip": (_weights_bit_flip, ("v1/model.safetensors: checksum mismatch",)),
    "weights truncated, manifest updated": (
        _weights_truncated_consistently,
        ("model.safetensors: not a readable safetensors file",),
    ),
    "config edited": (_config_edited, ("v1/config.json: checksum mismatch",)),
    "config edited, manifest updated": (
        _config_edited_consistently,
        ("model.safetensors",),  # the weights do not fit the config's layer sizes
    ),
    "manifest checksum changed": (_manifest_checksum_changed, ("metrics.json: checksum",)),
    "manifest not JSON": (_manifest_not_json, ("manifest.json: not valid JSON",)),
    "manifest deleted": (_manifest_deleted, ("manifest.json: missing", "incomplete or damaged")),
    "manifest points outside": (_manifest_points_outside, ("lists a path outside the version",)),
    "manifest forgets the weights": (
        _manifest_forgets_the_weights,
        ("manifest.json: does not list model.safetensors",),
    ),
    "listed file deleted": (_listed_file_deleted, ("v1/model.onnx: missing",)),
    "version does not exist": (lambda r: show(r, "v99"), ("no published version v99",)),
    "version is nonsense": (lambda r: show(r, "newest"), ("'newest' is not a version",)),
    "version zero": (lambda r: show(r, "v0"), ("is not a version",)),
    "alias names nothing": (_alias_names_nothing, ("no published version v7",)),
    "alias is garbage": (_alias_garbage, ("no published version",)),
    "alias is a folder": (_alias_is_a_folder, ("latest: cannot read the alias",)),
    "registry is other files": (_folder_of_other_files, ("not a model registry",)),
    "registry is a file": (_a_file, ("not a model registry",)),
    "registry does not exist": (
        lambda r: show(r / "nowhere"),
        ("nowhere: not a model registry (does not exist",),
    ),
}


@pytest.fixture
def registry_copy(reference: dict[str, Any], tmp_path: Path) -> Callable[[str], Path]:
    def copy(name: str) -> Path:
        target = tmp_path / name.replace(" ", "-").replace(",", "") / "models"
        shutil.copytree(reference["registry"], target)
        return target

    return copy


def test_damaged_versions_and_registries_are_refused(
    registry_copy: Callable[[str], Path], digit_folder: Path, prefect_api: str, tmp_path: Path
) -> None:
    commands = [damage(registry_copy(name)) for name, (damage, _) in CASES.items()]
    envs = [cli_env(tmp_path / "data", None)] * len(commands)
    # And batch prediction, given tampered weights, refuses them before scoring anything.
    tampered = registry_copy("predict with tampered weights")
    flip_byte(tampered / "v1" / "model.safetensors")
    output = tmp_path / "out" / "digits.parquet"
    commands.append(
        ["predict", str(digit_folder), "--model", str(tampered), "--output", str(output)]
    )
    envs.append(cli_env(tmp_path / "data", prefect_api))
    expected = [fragments for _, fragments in CASES.values()]
    expected.append(("model.safetensors: checksum mismatch", "refusing to use"))

    for fragments, result in zip(expected, digitflow_all(commands, envs), strict=True):
        assert_one_line_error(result, *fragments)
    assert not output.exists() and not output.with_name(output.name + ".parts").exists()


def test_the_undamaged_copy_verifies(registry_copy: Callable[[str], Path], tmp_path: Path) -> None:
    """The copies are damaged only where each case says: untouched, one verifies."""
    result = digitflow(*show(registry_copy("intact")), "--json", env=cli_env(tmp_path, None))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verified"] is True
