"""The analyses take SteeringVector and PairActivations directly, check their layers, and give
the same numbers as the raw-tensor calls."""

import dataclasses

import pandas as pd
import pytest
import torch

import workbench as wb
from workbench import analysis as A


@pytest.fixture(scope="module")
def two(tiny, short_queries):
    """Two instructions' activations and vectors over layers 0-3 of the tiny model."""
    acts = {
        iid.split(":")[1]: wb.cache_pairs(tiny, wb.instruction_pairs(short_queries, iid, seed=0), batch_size=8)
        for iid in ("change_case:english_lowercase", "punctuation:no_comma")
    }
    return acts, {name: wb.derive(a) for name, a in acts.items()}


def test_cosine_matrix_takes_vectors(two):
    _, vecs = two
    layers = list(vecs["english_lowercase"].layers)
    by_object = A.cosine_matrix(vecs)
    by_tensor = A.cosine_matrix({n: v.vectors for n, v in vecs.items()}, layers)
    pd.testing.assert_frame_equal(by_object, by_tensor)
    sub = A.cosine_matrix(vecs, layers=[1, 3])
    assert sorted(sub.layer.unique()) == [1, 3]
    with pytest.raises(ValueError, match="no layer"):
        A.cosine_matrix(vecs, layers=[9])


def test_cosine_matrix_refuses_vectors_over_different_layers(two):
    _, vecs = two
    v = vecs["english_lowercase"]
    short = dataclasses.replace(
        v,
        vectors=v.vectors[:2],
        layers=v.layers[:2],
        z_bars=v.z_bars[:2],
        z_bars_without=v.z_bars_without[:2],
        norms=v.norms[:2],
    )
    with pytest.raises(ValueError, match="different layers"):
        A.cosine_matrix({"a": v, "b": short})
    assert len(A.cosine_matrix({"a": v, "b": short}, layers=list(short.layers))) == 2 * 4
    with pytest.raises(ValueError, match="layers="):
        A.cosine_matrix({"a": v.vectors})


def test_projection_separation_takes_acts_and_vector(two):
    acts, vecs = two
    a, v = acts["english_lowercase"], vecs["english_lowercase"]
    by_object = A.projection_separation(a, v)
    by_tensor = A.projection_separation(a.with_instruction, a.without_instruction, v.vectors, a.layers)
    pd.testing.assert_frame_equal(by_object, by_tensor)
    pd.testing.assert_frame_equal(A.projection_separation(a, directions=v), by_object)
    # the "with" mean of the vector's own pairs is its z-bar
    z = by_object[by_object.side == "with"].groupby("layer").projection.mean().to_numpy()
    assert torch.allclose(torch.tensor(z).float(), v.z_bars, atol=1e-4)
    sub = A.projection_separation(a, v, layers=[2])
    assert set(sub.layer) == {2}


def test_projection_separation_refuses_a_vector_without_the_acts_layers(tiny, short_queries, two):
    _, vecs = two
    acts = wb.cache_pairs(tiny, wb.instruction_pairs(short_queries[:3], "punctuation:no_comma"), layers=[0, 1])
    part = dataclasses.replace(
        vecs["no_comma"],
        vectors=vecs["no_comma"].vectors[2:],
        layers=(2, 3),
        z_bars=vecs["no_comma"].z_bars[2:],
        z_bars_without=vecs["no_comma"].z_bars_without[2:],
        norms=vecs["no_comma"].norms[2:],
    )
    with pytest.raises(ValueError, match=r"directions has no layer \[0, 1\]"):
        A.projection_separation(acts, part)
    with pytest.raises(ValueError, match="needs directions"):
        A.projection_separation(acts)


def test_stability_and_cases_take_acts(two):
    acts, _ = two
    a = acts["no_comma"]
    pd.testing.assert_frame_equal(
        A.split_half_stability(a, n_splits=5),
        A.split_half_stability(a.with_instruction, a.without_instruction, a.layers, n_splits=5),
    )
    pd.testing.assert_frame_equal(
        A.pairwise_cosine_cases(a, instruction="x"),
        A.pairwise_cosine_cases(a.with_instruction, a.without_instruction, a.layers, "x"),
    )
    with pytest.raises(ValueError, match="holds both sides"):
        A.split_half_stability(a, a.without_instruction)


def test_difference_embedding_takes_acts(two):
    acts, _ = two
    emb = A.difference_embedding(acts, layer=2, method="pca")
    assert list(emb.label.unique()) == ["english_lowercase", "no_comma"]
    assert emb.groupby("label").example.max().tolist() == [7, 7]
    a = acts["no_comma"]
    slot = a.layers.index(2)
    diffs = a.with_instruction[:, slot] - a.without_instruction[:, slot]
    single = A.difference_embedding(a, layer=2)
    assert (single.label == "punctuation:no_comma").all()
    ref = A.difference_embedding(diffs, ["punctuation:no_comma"] * 8)
    pd.testing.assert_frame_equal(single, ref)
    with pytest.raises(ValueError, match="layer="):
        A.difference_embedding(a)
    with pytest.raises(ValueError, match="no layer"):
        A.difference_embedding(a, layer=9)


def test_cross_model_cosine_takes_vectors(two):
    _, vecs = two
    v = vecs["no_comma"]
    df = A.cross_model_cosine(v, 2 * v)
    assert df.cosine.round(5).eq(1).all() and df.norm_ratio.round(5).eq(0.5).all()
    assert len(A.compare_mapped(v, v, layers=[0, 1])) == 2
