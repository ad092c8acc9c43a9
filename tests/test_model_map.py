"""Maps between two models' residual streams: aligned positions, whole-text held-out splits,
and known answers (a model mapped onto itself)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.analysis import fit_linear_map
from workbench.analysis.model_map import aligned_positions, fit_model_maps, paired_residuals

TEXTS = [
    "Write a short poem about the sea.",
    "Explain how a bicycle works, step by step.",
    "List three facts about Jupiter's moons.",
    "What is the capital of Peru?",
    "Describe your ideal weekend in detail.",
    "Naïve café owners sell crème brûlée — why?",
    "Give me a recipe for pancakes.",
    "How do vaccines train the immune system?",
]


def test_groups_hold_out_whole_groups():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(60, 5)))
    y = x @ torch.tensor(rng.normal(size=(5, 3)))
    groups = np.repeat(np.arange(10), 6)
    m = fit_linear_map(x, y, method="ridge", alpha=1e-6, test_fraction=0.3, groups=groups)
    assert (m.n_train, m.n_test) == (42, 18)  # 3 of 10 groups of 6 held out
    assert m.r2_heldout > 0.999
    with pytest.raises(ValueError, match="one label per row"):
        fit_linear_map(x, y, groups=groups[:-1])


@pytest.mark.slow
def test_aligned_positions_mark_the_same_prefix(smollm, gemma):
    """Both models have read exactly the same characters after each pair of aligned tokens."""
    for text in TEXTS:
        a, b = aligned_positions(smollm.tokenizer, gemma.tokenizer, text)
        assert len(a) == len(b) >= len(text.split()) // 2
        assert a == sorted(a) and b == sorted(b)
        ids_a = smollm.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids_b = gemma.tokenizer(text, add_special_tokens=False)["input_ids"]
        for i, j in zip(a, b):
            assert smollm.tokenizer.decode(ids_a[: i + 1]) == gemma.tokenizer.decode(ids_b[: j + 1])
        assert (a[-1], b[-1]) == (len(ids_a) - 1, len(ids_b) - 1)  # the whole text, last


def test_a_model_mapped_onto_itself(tiny, tiny_vec):
    """Same model on both sides: every aligned position pairs a token with itself, each layer with
    itself, so both methods recover the identity (R² ~ 1) and a mapped vector keeps its direction."""
    fit = fit_model_maps(tiny, tiny, TEXTS, alpha=1e-6, test_fraction=0.25)
    n = tiny.cfg.n_layers
    assert sorted(fit.table["tgt_layer"].unique()) == list(range(n))
    assert (fit.table["src_layer"] == fit.table["tgt_layer"]).all()
    assert set(fit.table["method"]) == {"ridge", "procrustes"}
    assert (fit.table["r2_heldout"] > 0.999).all(), fit.table
    n_positions = sum(len(aligned_positions(tiny.tokenizer, tiny.tokenizer, t)[0]) for t in TEXTS)
    assert n_positions > sum(len(t.split()) for t in TEXTS)
    assert (fit.table["n_train"] + fit.table["n_test"] == n_positions).all()
    for method in ("ridge", "procrustes"):
        mapped = fit.map_vector(tiny_vec, method=method)
        for layer in mapped.layers:
            cos = torch.cosine_similarity(mapped.direction(layer), tiny_vec.direction(layer), dim=0)
            assert cos > 0.99, (method, layer, float(cos))
        assert mapped.meta["map_method"] == method


def test_mapped_vector_steers_the_target_and_maps_save(tmp_path, tiny, tiny_base, tiny_acts, tiny_vec):
    """tiny-instruct -> tiny-base (other weights, same width): the mapped vector belongs to the
    target, z-bar comes from target activations, and the saved maps load by layer pair."""
    fit = fit_model_maps(tiny, tiny_base, TEXTS, target_layers=[1, 2], methods=("ridge",))
    assert list(fit.table["tgt_layer"]) == [1, 2]
    base_acts = wb.cache_pairs(tiny_base, tiny_acts.pairs, layers=[1, 2])
    mapped = fit.map_vector(tiny_vec, target_acts=base_acts)
    assert mapped.layers == (1, 2)
    mapped.check_model(tiny_base)
    expected = (base_acts.with_instruction[:, 0] @ mapped.direction(1)).mean()
    assert mapped.z_bar(1) == pytest.approx(float(expected), rel=1e-5)
    expected_without = (base_acts.without_instruction[:, 1] @ mapped.direction(2)).mean()
    assert mapped.z_bar_without(2) == pytest.approx(float(expected_without), rel=1e-5)
    assert fit.map_vector(tiny_vec).z_bars.isnan().all()  # no target activations: z-bar unknown (NaN)
    wb.generate(tiny_base, ["Hello"], [wb.Steering(mapped, layer=2, mode="adjust")], max_new_tokens=2)
    saved = fit.save(tmp_path / "maps")
    assert sorted(p.name for p in saved.iterdir() if p.suffix == ".safetensors") == [
        "src1_tgt1.safetensors",
        "src2_tgt2.safetensors",
    ]


def test_no_texts_is_an_error(tiny):
    with pytest.raises(ValueError, match="no texts"):
        paired_residuals(tiny, tiny, [], [(0, 0)])
