"""The logit lens of a direction: planted tokens read out first, an independent transformers
oracle, the baseline form, per-example differences and the figure."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import analysis as A
from workbench import plots as P


def _planted(model, token_ids):
    """Per token, the direction whose readout is that token's unembedding column: the column
    divided by the final norm's gain (reversing g ⊙ u)."""
    gain = model.ln_final(torch.ones(1, model.cfg.d_model)).detach()[0]  # RMSNorm of ones: the gain
    return torch.stack([model.W_U[:, t].detach() / gain for t in token_ids])


def test_planted_unembedding_column_reads_out_first(tiny, make_vector):
    ids = [70, 100, 150, 200]
    vec = make_vector(tiny, dict(zip(range(4), _planted(tiny, ids))))
    df = A.logit_lens(tiny, vec, k=5)
    assert list(df.columns) == ["layer", "side", "rank", "token", "token_id", "logit"]
    assert len(df) == 4 * 2 * 5
    first = df[(df.side == "top") & (df["rank"] == 1)].sort_values("layer")
    assert first.token_id.tolist() == ids
    assert first.token.tolist() == [tiny.tokenizer.decode([t]) for t in ids]
    # reversed: the token is the most suppressed
    low = A.logit_lens(tiny, -vec, k=5)
    assert low[(low.side == "bottom") & (low["rank"] == 1)].sort_values("layer").token_id.tolist() == ids
    # ranks are ordered by logit on each side
    for (layer, side), g in df.groupby(["layer", "side"]):
        logits = g.sort_values("rank").logit.to_numpy()
        assert (np.diff(logits) <= 0).all() if side == "top" else (np.diff(logits) >= 0).all()


def test_direction_logits_match_transformers_oracle(tiny):
    """Independent of the bridge: the HF model's own final norm and lm_head weight."""
    hf = tiny.original_model
    d = torch.randn(3, tiny.cfg.d_model, generator=torch.Generator().manual_seed(0))
    u = d / d.norm(dim=-1, keepdim=True) * math.sqrt(tiny.cfg.d_model)
    with torch.no_grad():
        expect = hf.model.norm(u) @ hf.lm_head.weight.T
    got = A.direction_logits(tiny, 5.0 * d)  # the scale of the input does not matter
    assert torch.allclose(got, expect, atol=1e-4 * expect.abs().max())


def test_tensor_input_needs_layers_and_matching_width(tiny, tiny_vec):
    rows = tiny_vec.vectors[:2]
    df = A.logit_lens(tiny, rows, layers=[0, 1], k=3)
    assert sorted(df.layer.unique()) == [0, 1]
    with pytest.raises(ValueError, match="layers="):
        A.logit_lens(tiny, rows)
    with pytest.raises(ValueError, match="no layer"):
        A.logit_lens(tiny, tiny_vec, layers=[7])
    with pytest.raises(ValueError, match="d_model"):
        A.logit_lens(tiny, torch.randn(1, 8), layers=[0])


def test_baseline_of_zero_mean_prompt_ranks_like_the_direction(tiny, tiny_vec, tiny_acts):
    """lens(0 + s u) - lens(0) is the direction readout times a positive scale (RMSNorm is
    scale-free), when the mean without-instruction state is zero and the gap is positive."""
    zero = torch.zeros_like(tiny_acts.without_instruction)
    shift = tiny_vec.vectors[None]  # every pair moves exactly along u by 1
    from dataclasses import replace

    acts = replace(tiny_acts, with_instruction=zero + shift, without_instruction=zero)
    plain = A.logit_lens(tiny, tiny_vec, k=6)
    based = A.logit_lens(tiny, tiny_vec, k=6, baseline=acts)
    assert plain.token_id.tolist() == based.token_id.tolist()
    # a real baseline runs and moves the ranking somewhat, but keeps the columns
    real = A.logit_lens(tiny, tiny_vec, k=6, baseline=tiny_acts)
    assert list(real.columns) == list(plain.columns) and len(real) == len(plain)


def test_difference_logit_lens_and_agreement(tiny, tiny_acts):
    per = A.difference_logit_lens(tiny, tiny_acts, layers=[1, 3], k=4)
    n = tiny_acts.n_pairs
    assert list(per.columns) == ["layer", "example", "side", "rank", "token", "token_id", "logit"]
    assert len(per) == 2 * n * 2 * 4
    # example i's readout is that of its own difference
    slot = tiny_acts.layers.index(3)
    diff = tiny_acts.with_instruction[2, slot] - tiny_acts.without_instruction[2, slot]
    want = A.direction_logits(tiny, diff[None])[0].topk(4).indices.tolist()
    got = per[(per.layer == 3) & (per.example == 2) & (per.side == "top")].sort_values("rank").token_id.tolist()
    assert got == want
    agree = A.lens_agreement(per, top=3)
    assert list(agree.columns) == ["layer", "side", "token", "token_id", "n_examples", "share", "mean_rank"]
    assert agree.share.between(0, 1).all() and (agree.groupby(["layer", "side"]).size() <= 3).all()
    # the count is right for one token
    row = agree.iloc[0]
    hits = per[(per.layer == row.layer) & (per.side == row.side) & (per.token_id == row.token_id)]
    assert hits.example.nunique() == row.n_examples


def test_logit_lens_figure(tiny, tiny_vec):
    df = A.logit_lens(tiny, tiny_vec, k=4)
    fig = P.logit_lens(df, layers=[1, 3])
    assert [t.name for t in fig.data] == ["top", "bottom"]
    assert fig.data[0].z.shape == (4, 2)
    assert fig.data[0].zmin == -fig.data[0].zmax
    with pytest.raises(ValueError, match="no rows for layers"):
        P.logit_lens(df, layers=[9])
    with pytest.raises(ValueError, match="lens_agreement"):
        P.logit_lens(pd.DataFrame(columns=["layer", "side", "rank", "token", "logit", "example"]))


def test_show_token_marks_spaces_and_newlines():
    from workbench.plots.lens import show_token

    assert show_token(" the") == "␣the"
    assert show_token("\n\n") == "⏎⏎"
    assert show_token(" ") == "␣"
    assert show_token("") == "∅"


@pytest.mark.slow
def test_smollm_lens_matches_oracle_and_names_real_tokens(smollm, smollm_vec):
    hf = smollm.original_model
    u = smollm_vec.vectors / smollm_vec.vectors.norm(dim=-1, keepdim=True) * math.sqrt(smollm.cfg.d_model)
    with torch.no_grad():
        expect = hf.model.norm(u) @ hf.lm_head.weight.T
    got = A.direction_logits(smollm, smollm_vec.vectors)
    assert (got.argmax(-1) == expect.argmax(-1)).all()
    assert torch.allclose(got, expect, atol=1e-3 * expect.abs().max())
    df = A.logit_lens(smollm, smollm_vec, k=5)
    assert df.token.map(len).gt(0).all()
