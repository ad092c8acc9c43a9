"""The scripts under analyses/ that read a committed run: checked on small synthetic runs with
known answers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import workbench as wb

ROOT = Path(__file__).resolve().parents[1]


def _script(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _vector(v: torch.Tensor, layers: tuple[int, ...]) -> wb.SteeringVector:
    n = len(layers)
    return wb.SteeringVector(v, layers, torch.ones(n), torch.zeros(n), torch.ones(n), {"model": "synthetic"})


def test_transfer_geometry_own_vs_carried(tmp_path):
    geometry = _script("analyses/transfer/geometry.py")
    layers, d = (3, 5), 16
    gen = torch.Generator().manual_seed(0)
    own = {name: torch.randn(len(layers), d, generator=gen) for name in ("a", "b", "c")}
    for name, v in own.items():
        _vector(v, layers).save(tmp_path / "vectors" / "own" / name)
        # carried: the own direction at layer 3, its negative at layer 5 (scale does not matter)
        _vector(torch.stack([2 * v[0], -v[1]]), layers).save(tmp_path / "vectors" / "carried" / name)
    _vector(own["a"], layers).save(tmp_path / "vectors" / "own" / "language__response_language" / "fr")
    _vector(own["a"], layers).save(tmp_path / "vectors" / "carried" / "language__response_language" / "fr")
    # an own vector with no carried twin is left out
    _vector(own["b"], layers).save(tmp_path / "vectors" / "own" / "extra")

    table = geometry.own_vs_carried(tmp_path).set_index("layer")
    assert table.loc[3, "n_instructions"] == 4
    assert table.loc[3, ["same_mean", "same_min", "same_max"]].tolist() == pytest.approx([1, 1, 1], abs=1e-3)
    assert table.loc[5, "same_min"] == pytest.approx(-1, abs=1e-3)  # a, b, c flipped; fr not
    assert table.loc[5, "same_max"] == pytest.approx(1, abs=1e-3)
    assert table.loc[5, "same_mean"] == pytest.approx(-0.5, abs=1e-3)
    # different instructions: the mean cosine over ordered pairs of distinct names, computed here
    names = ["a", "b", "c", "fr"]
    vecs = {n: own[n] if n != "fr" else own["a"] for n in names}
    cos = [
        float(torch.nn.functional.cosine_similarity(vecs[x][0], vecs[y][0], dim=0))
        for x in names
        for y in names
        if x != y
    ]
    assert table.loc[3, "different_mean"] == pytest.approx(sum(cos) / len(cos), abs=1e-3)
