"""Analyses on synthetic data with planted answers."""

import math

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch

from workbench import analysis as A

LAYERS = [2, 4, 6]
D = 256


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _planted_pairs(n=40, signal=50.0, seed=0):
    """Without = noise; with = noise + a shared per-layer direction (norm `signal`) + noise."""
    g = _gen(seed)
    u = torch.nn.functional.normalize(torch.randn(len(LAYERS), D, generator=g), dim=-1)
    without = torch.randn(n, len(LAYERS), D, generator=g) * 3
    with_ = without + signal * u + torch.randn(n, len(LAYERS), D, generator=g)
    return with_, without, u


def test_cosine_matrix_planted_shared_direction():
    g = _gen(1)
    shared = torch.randn(len(LAYERS), D, generator=g)
    vectors = {
        "a": 10 * shared + 0.05 * torch.randn(len(LAYERS), D, generator=g),
        "b": 3 * shared + 0.01 * torch.randn(len(LAYERS), D, generator=g),
        "c": torch.randn(len(LAYERS), D, generator=g),
    }
    df = A.cosine_matrix(vectors, LAYERS)
    assert list(df.columns) == ["layer", "instruction_a", "instruction_b", "cosine"]
    assert len(df) == len(LAYERS) * 9
    ab = df[(df.instruction_a == "a") & (df.instruction_b == "b")]
    assert (ab.cosine > 0.99).all() and sorted(ab.layer) == LAYERS
    assert np.allclose(df[df.instruction_a == df.instruction_b].cosine, 1, atol=1e-5)
    band = A.random_cosine_band(D).set_index("method").loc["exact"]
    ac = df[(df.instruction_a == "a") & (df.instruction_b == "c")].cosine
    assert (ac.abs() < 2 * band.high).all()
    # symmetric
    ba = df[(df.instruction_a == "b") & (df.instruction_b == "a")].cosine.to_numpy()
    assert np.allclose(ab.cosine.to_numpy(), ba)


def test_cosine_matrix_rejects_wrong_layer_count():
    with pytest.raises(ValueError, match="n_layers=3"):
        A.cosine_matrix({"a": torch.randn(2, D)}, LAYERS)


@pytest.mark.parametrize("d", [16, 512])
def test_random_cosine_band_covers_95_percent(d):
    band = A.random_cosine_band(d, n=2000, seed=0).set_index("method")
    assert list(band.index) == ["empirical", "exact", "normal"]
    # fresh draws, independent of the band's own seed
    g = _gen(123)
    a, b = torch.randn(4000, d, generator=g), torch.randn(4000, d, generator=g)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).numpy()
    for method in band.index:
        low, high = band.loc[method, ["low", "high"]]
        coverage = ((cos >= low) & (cos <= high)).mean()
        # the normal approximation is slightly wide at small d
        assert 0.93 <= coverage <= (0.985 if method == "normal" else 0.97), (method, coverage)
    assert band.loc["normal", "high"] == pytest.approx(1.959964 / math.sqrt(d))
    assert band.loc["empirical", "high"] == pytest.approx(band.loc["exact", "high"], rel=0.15)


def test_split_half_stability_planted_vs_noise():
    with_, without, _ = _planted_pairs()
    planted = A.split_half_stability(with_, without, LAYERS, n_splits=10)
    assert list(planted.layer) == LAYERS
    assert (planted.cosine_mean > 0.95).all()
    assert (planted.half_size == 20).all()

    g = _gen(5)
    noise = A.split_half_stability(
        torch.randn(41, 3, D, generator=g), torch.randn(41, 3, D, generator=g), LAYERS, n_splits=10
    )
    assert (noise.cosine_mean.abs() < 0.1).all()
    assert (noise.cosine_std > 0).all()


def test_pairwise_cosine_cases_planted():
    with_, without, _ = _planted_pairs(n=12)
    df = A.pairwise_cosine_cases(with_, without, LAYERS, instruction="lower")
    assert set(df.case) == set(A.geometry.CASES)
    assert (df.instruction == "lower").all() and len(df) == 3 * len(LAYERS)
    # per-example difference = 50 u + N(0, I_256): expected cosine 50² / (50² + 256)
    same = df[df.case == "same_instruction_across_queries"]["mean"]
    assert np.allclose(same, 2500 / 2756, atol=0.02)
    n = df.set_index("case")["n"].groupby(level=0).first()
    assert n["same_instruction_across_queries"] == 66 and n["with_vs_without_same_query"] == 12
    assert n["across_queries"] == 132
    # without = 3 N(0, I): |without|² ≈ 2304, |with|² ≈ 2304 + 2500 + 256 = 5060
    paired = df[df.case == "with_vs_without_same_query"]["mean"]
    assert np.allclose(paired, math.sqrt(2304 / 5060), atol=0.03)
    # with-with pairs share 50 u (cosine 2500 / 5060), without-without pairs nothing: pooled half
    across = df[df.case == "across_queries"]["mean"]
    assert np.allclose(across, 2500 / 5060 / 2, atol=0.03)


def test_projection_separation_perfect():
    with_, without, u = _planted_pairs(n=20)
    proj = A.projection_separation(with_, without, 7 * u, LAYERS)
    assert list(proj.columns) == ["layer", "example", "side", "projection"]
    assert len(proj) == 2 * 20 * len(LAYERS)
    # projection on the unit direction, whatever the direction's norm
    l0 = proj[(proj.layer == LAYERS[0]) & (proj.side == "with") & (proj.example == 3)].projection.item()
    assert l0 == pytest.approx((with_[3, 0] @ u[0]).item(), rel=1e-4)
    sep = A.separation(proj)
    assert list(sep.layer) == LAYERS
    assert (sep.auroc == 1.0).all()
    assert (sep.cohens_d > 5).all()
    # flipping the direction flips the sign
    flipped = A.separation(A.projection_separation(with_, without, -u, LAYERS))
    assert (flipped.auroc == 0.0).all() and (flipped.cohens_d < -5).all()


def test_separation_known_cohens_d():
    df = pd.DataFrame(
        {
            "layer": 0,
            "side": ["with"] * 3 + ["without"] * 3,
            "projection": [2.0, 3.0, 4.0, 0.0, 1.0, 2.0],
        }
    )
    sep = A.separation(df).iloc[0]
    assert sep.cohens_d == pytest.approx(2.0)  # mean gap 2, pooled sd 1
    assert sep.auroc == pytest.approx(8.5 / 9)


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_difference_embedding_separates_two_clusters(method):
    g = _gen(2)
    centers = 20 * torch.randn(2, 32, generator=g)
    diffs = torch.cat([centers[0] + torch.randn(10, 32, generator=g), centers[1] + torch.randn(10, 32, generator=g)])
    labels = ["a"] * 10 + ["b"] * 10
    emb = A.difference_embedding(diffs, labels, method=method, seed=0)
    assert list(emb.columns) == ["x", "y", "label", "example"] and len(emb) == 20
    means = emb.groupby("label")[["x", "y"]].mean()
    spread = emb.groupby("label")[["x", "y"]].std().to_numpy().max()
    assert np.linalg.norm(means.loc["a"] - means.loc["b"]) > 3 * spread


def test_difference_embedding_tsne_clips_perplexity():
    emb = A.difference_embedding(torch.randn(5, 8), list("abcde"), method="tsne")
    assert len(emb) == 5


def test_ridge_recovers_exact_linear_map():
    g = _gen(3)
    x = torch.randn(300, 16, generator=g)
    w = torch.randn(16, 24, generator=g)
    m = A.fit_linear_map(x, x @ w + 5.0, method="ridge", alpha=1e-3)
    assert m.r2_heldout > 0.99
    assert (m.n_train, m.n_test) == (240, 60)
    assert torch.allclose(m.weight, w, atol=1e-2)
    v = torch.randn(16, generator=g)
    assert torch.allclose(m.apply_direction(v), v @ w, atol=1e-2)
    assert torch.allclose(m.apply(v), v @ w + 5.0, atol=1e-2)


def test_procrustes_recovers_orthogonal_map_and_matches_scipy():
    g = _gen(4)
    x = torch.randn(200, 16, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    m = A.fit_linear_map(x, 3.0 * x @ q + 1.0, method="procrustes")
    assert m.r2_heldout > 0.99 and m.alpha is None
    assert torch.allclose(m.weight.double(), 3.0 * q, atol=1e-4)
    # independent oracle: scipy on the same (centred) training rows
    noisy_y = x @ q + 0.3 * torch.randn(200, 16, generator=g, dtype=torch.float64)
    m2 = A.fit_linear_map(x, noisy_y, method="procrustes", test_fraction=0.0)
    xc, yc = (x - x.mean(0)).numpy(), (noisy_y - noisy_y.mean(0)).numpy()
    r, _ = scipy.linalg.orthogonal_procrustes(xc, yc)
    w = m2.weight.double().numpy()
    scale = np.linalg.norm(w[:, 0])
    assert np.allclose(w / scale, r, atol=1e-5)
    assert math.isnan(m2.r2_heldout)


def test_procrustes_across_widths_is_semi_orthogonal():
    g = _gen(6)
    x = torch.randn(200, 8, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    embed = q[:8]  # (8, 12) with orthonormal rows
    m = A.fit_linear_map(x, x @ embed, method="procrustes")
    assert m.weight.shape == (8, 12) and m.r2_heldout > 0.99
    down = A.fit_linear_map(x @ embed, x, method="procrustes")
    assert down.weight.shape == (12, 8) and down.r2_heldout > 0.99


def test_linear_map_save_load_roundtrip(tmp_path):
    import dataclasses
    import json

    g = _gen(7)
    x = torch.randn(50, 6, generator=g)
    m = A.fit_linear_map(x, x @ torch.randn(6, 4, generator=g), alpha=0.1)
    m = dataclasses.replace(m, provenance={"source_model": "tiny-a", "layer": 3})
    path = A.save_linear_map(m, tmp_path / "maps" / "a_to_b.l3")
    assert path.name == "a_to_b.l3.safetensors"
    sidecar = json.loads((tmp_path / "maps" / "a_to_b.l3.json").read_text())
    assert sidecar["d_src"] == 6 and sidecar["provenance"]["layer"] == 3
    back = A.load_linear_map(tmp_path / "maps" / "a_to_b.l3")
    assert torch.equal(back.weight, m.weight) and torch.equal(back.bias, m.bias)
    assert (back.method, back.r2_heldout, back.alpha, back.provenance) == (m.method, m.r2_heldout, 0.1, m.provenance)
    sidecar["d_src"] = 7
    (tmp_path / "maps" / "a_to_b.l3.json").write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match="shapes"):
        A.load_linear_map(path)


def test_matched_layers_endpoints_and_monotone():
    pairs = A.matched_layers(26, 42)
    assert len(pairs) == 26 and pairs[0] == (0, 0) and pairs[-1] == (25, 41)
    tgt = [t for _, t in pairs]
    assert tgt == sorted(tgt)
    assert A.matched_layers(42, 26)[-1] == (41, 25)
    assert A.matched_layers(5, 5) == [(i, i) for i in range(5)]
    assert A.matched_layers(3, 5) == [(0, 0), (1, 2), (2, 4)]


def test_cross_model_cosine_and_compare_mapped():
    g = _gen(8)
    a = torch.randn(3, D, generator=g)
    df = A.cross_model_cosine(a, 2 * a, LAYERS)
    assert list(df.columns) == ["layer", "cosine", "norm_ratio"]
    assert np.allclose(df.cosine, 1, atol=1e-6) and np.allclose(df.norm_ratio, 0.5)
    out = A.compare_mapped(a, -a, LAYERS)
    assert np.allclose(out.cosine, -1, atol=1e-6)
    with pytest.raises(ValueError, match="widths differ"):
        A.cross_model_cosine(a, torch.randn(3, D + 1), LAYERS)


def test_cross_application_matrix():
    records = pd.DataFrame(
        {
            "vector_source": ["none", "own", "it", "none", "own", "it"],
            "target_model": ["base"] * 3 + ["it"] * 3,
            "accuracy": [0.1, 0.2, 0.3, 0.4, 0.5, np.nan],
        }
    )
    m = A.cross_application_matrix(records)
    assert list(m.index) == ["none", "own", "it"] and list(m.columns) == ["base", "it"]
    assert m.loc["it", "base"] == 0.3 and m.loc["own", "it"] == 0.5
    with pytest.raises(ValueError, match="aggregate first"):
        A.cross_application_matrix(pd.concat([records, records.iloc[:1]]))
