"""Control pairs and vectors, phrasing hold-out, and projecting a direction out."""

import math

import numpy as np
import pytest
import torch

import workbench as wb
from workbench import analysis as A
from workbench import pairs as P


def test_control_pairs_append_a_neutral_sentence(short_queries):
    pairs = P.control_pairs(short_queries, n=5, seed=1)
    assert len(pairs) == 5 and len({p.without_instruction for p in pairs}) == 5
    for p in pairs:
        assert p.instruction_id == "control:neutral" and p.kwargs == {}
        assert p.with_instruction.startswith(p.without_instruction)
        assert p.with_instruction[len(p.without_instruction) :].strip() in P.NEUTRAL_SENTENCES
    assert P.control_pairs(short_queries, n=5, seed=1) == pairs
    assert P.control_pairs(short_queries, n=5, seed=2) != pairs
    with pytest.raises(ValueError, match="no base queries"):
        P.control_pairs([])


def test_phrasing_table_counts():
    table = P.phrasing_table().set_index("instruction_id")
    for iid, extra in P.PHRASINGS.items():
        assert table.loc[iid, "n_phrasings"] == 1 + len(extra)
        assert table.loc[iid, "phrasings"][1:] == extra
    assert table.loc["detectable_format:title", "n_phrasings"] == 2
    assert table.loc["length_constraints:number_words", "has_kwargs"]
    assert table.loc["length_constraints:number_words", "n_phrasings"] == 1


def test_split_phrasings_holds_out_unseen_sentences(short_queries):
    iid = "change_case:english_lowercase"
    ph = P.split_phrasings(iid, held_out=1, seed=0)
    assert len(ph.train) == 2 and len(ph.held_out) == 1 and not set(ph.train) & set(ph.held_out)
    assert set(ph.train) | set(ph.held_out) == set(P.phrasings(iid))
    train = wb.instruction_pairs(short_queries, iid, phrasings=ph.train, seed=0)
    test = wb.instruction_pairs(short_queries, iid, phrasings=ph.held_out, seed=0)

    def tail(p):
        return p.with_instruction[len(p.without_instruction) :].strip()

    assert {tail(p) for p in train} <= set(ph.train)
    assert {tail(p) for p in test} == set(ph.held_out)
    explicit = P.split_phrasings(iid, held_out=[P.phrasings(iid)[0]])
    assert explicit.held_out == (P.phrasings(iid)[0],)
    with pytest.raises(ValueError, match="1 phrasing"):
        P.split_phrasings("detectable_format:multiple_sections")
    with pytest.raises(ValueError, match="some but not all"):
        P.split_phrasings(iid, held_out=P.phrasings(iid))
    with pytest.raises(ValueError, match="verifier arguments"):
        wb.instruction_pairs(short_queries, "length_constraints:number_words", phrasings=["Be brief."])


def test_default_instruction_pairs_unchanged(short_queries):
    """phrasings=True keeps drawing exactly what it drew before the hold-out option existed."""
    pairs = wb.instruction_pairs(short_queries, "detectable_format:title", seed=0)
    tails = [p.with_instruction[len(p.without_instruction) + 1 :] for p in pairs]
    assert set(tails) <= set(P.phrasings("detectable_format:title"))


def test_project_out_vector(tiny, tiny_vec, tiny_acts, make_vector):
    ctrl = make_vector(
        tiny,
        {l: torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(l)) for l in tiny_vec.layers},
        instruction_id="control:neutral",
    )
    out = A.project_out(2 * tiny_vec, ctrl)
    for l in tiny_vec.layers:
        assert abs(float(out.direction(l) @ ctrl.direction(l))) < 1e-5
        assert math.isclose(float(out.vector(l).norm()), 2.0, rel_tol=1e-5)  # the scale is kept
    assert out.meta["operations"][-1] == "project_out [control:neutral]"
    assert torch.isnan(out.z_bars).all()
    with_z = A.project_out(tiny_vec, ctrl, acts=tiny_acts)
    proj = A.projection_separation(tiny_acts, with_z)
    z = proj[proj.side == "with"].groupby("layer").projection.mean().to_numpy()
    assert np.allclose(z, with_z.z_bars.numpy(), atol=1e-4)
    # the control projected out of itself is a zero vector, whose cosines read 0
    assert (
        A.cosine_matrix({"a": tiny_vec, "b": ctrl}, project_out=ctrl)
        .query("instruction_a == 'a' and instruction_b == 'b'")
        .cosine.abs()
        .max()
        < 1e-5
    )


def test_project_out_activations_and_tensors(tiny_vec, tiny_acts):
    out = A.project_out(tiny_acts, tiny_vec)
    proj = A.projection_separation(out, tiny_vec)
    assert proj.projection.abs().max() < 1e-3
    t = A.project_out(tiny_acts.with_instruction, tiny_vec)
    assert torch.allclose(t, out.with_instruction)
    with pytest.raises(ValueError, match="layers="):
        A.project_out(tiny_acts.with_instruction, tiny_vec.vectors)
    with pytest.raises(ValueError, match="zero norm"):  # nothing is left of a direction removed from itself
        A.projection_separation(tiny_acts, tiny_vec, project_out=tiny_vec)


def test_control_vector_one_call(tiny, short_queries):
    ctrl = A.control_vector(tiny, short_queries, n=6, seed=0, layers=[1, 3])
    assert ctrl.layers == (1, 3) and ctrl.meta["instruction_id"] == "control:neutral"
    assert ctrl.meta["n_pairs"] == 6
    pairs = P.control_pairs(short_queries, n=6, seed=0)
    again = wb.derive(wb.cache_pairs(tiny, pairs, layers=[1, 3]), instruction_id="control:neutral")
    assert torch.allclose(again.vectors, ctrl.vectors, atol=1e-6)
