"""The outside-MNIST digit generator (bench/outside_digits.py): labelled, reproducible, and
readable by the product's image path."""

from __future__ import annotations

import hashlib
from pathlib import Path

from bench.outside_digits import KINDS, font_files, generate
from netcore.images import load_digits


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.*"))
    }


def test_generated_folder_is_labelled_reproducible_and_readable(tmp_path):
    assert font_files(), "fc-list finds no fonts"
    counts = generate(tmp_path / "a", per_kind=12, seed=3)
    generate(tmp_path / "b", per_kind=12, seed=3)
    generate(tmp_path / "c", per_kind=12, seed=4)
    assert counts == dict.fromkeys(KINDS, 12)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")
    for kind in KINDS:
        files = sorted((tmp_path / "a" / kind).iterdir())
        assert [int(f.stem.split("_")[1]) for f in files] == [i % 10 for i in range(12)]
        pixels, problems = load_digits([str(f) for f in files])
        assert sum(p is None for p in problems) >= 10, (kind, problems)
        assert pixels.shape == (12, 28, 28)
