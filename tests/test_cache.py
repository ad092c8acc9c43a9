"""Caching the residual stream: raw transformers hidden states as the oracle, positions, layers,
hook points, padding, checkpoints, and errors."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import workbench as wb
import workbench.cache as wc
from workbench.prompts import encode

MIXED_PAIRS = [  # short and long prompts in one padded batch
    wb.PromptPair(
        "long",
        "Write a detailed essay about the causes and consequences of the fall of the "
        "Roman Empire in the west. Your entire answer should be in lowercase letters.",
        "Hi",
    ),
    wb.PromptPair(
        "mid",
        "Describe a rainy afternoon in a small town. Do not use any commas.",
        "Describe a rainy afternoon in a small town.",
    ),
    wb.PromptPair("short", "Hi. Answer in capitals.", "Name one fruit."),
]


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["smollm", "gemma"])
def test_matches_raw_transformers_hidden_states(fixture, request):
    """Every layer and position of a padded batch equals HF's own unpadded forward pass."""
    model = request.getfixturevalue(fixture)
    name = model.wb_info.name
    acts = wb.cache_pairs_all_positions(model, MIXED_PAIRS, batch_size=4)
    ids = encode(model.tokenizer, acts.prompts_with + acts.prompts_without, acts.format)
    lengths = sorted((len(i) for i in ids), reverse=True)  # the order batches are cut in
    assert lengths[0] - lengths[3] >= 10 and lengths[4] != lengths[5]  # both batches are padded

    hf = AutoModelForCausalLM.from_pretrained(
        wb.weights.cache_dir(wb.weights.BUNDLED[name]), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    n_layers = model.cfg.n_layers
    ours_all = list(acts.with_instruction) + list(acts.without_instruction)
    with torch.no_grad():
        for row, ours in zip(ids, ours_all):
            hidden = hf(input_ids=torch.tensor([row]), output_hidden_states=True).hidden_states
            # hidden[0] is the embedding output and hidden[l + 1] the output of block l, except
            # that HF's last entry is taken after the final norm: apply that norm to ours.
            ref = torch.stack(hidden[1:], dim=1)[0]  # (n_layers, pos, d)
            ours = ours.transpose(0, 1)  # (n_layers, pos, d)
            assert ours.shape == ref.shape == (n_layers, len(row), model.cfg.d_model)
            ours = torch.cat([ours[:-1], hf.model.norm(ours[-1:])])
            err = (ours - ref).abs()
            scale = ref.abs().max()
            assert err.max() <= 1e-4 * scale, f"{name}: max error {err.max():.3g} at scale {scale:.3g}"
            # and per token and layer, since massive activations on the first token dominate
            # the global scale of Gemma's residual stream
            per_token = err.amax(-1) / ref.abs().amax(-1)
            assert per_token.max() <= 1e-4, f"{name}: per-token relative error {per_token.max():.3g}"
    # the final norm matters: without it the last layer would not match
    assert not torch.allclose(ours_all[-1][:, -1], ref[-1], atol=1e-2 * float(scale))


def test_positions_agree_with_slicing_all(tiny, tiny_pairs):
    pairs = tiny_pairs[:5]
    full = wb.cache_pairs_all_positions(tiny, pairs, batch_size=3)
    last = wb.cache_pairs(tiny, pairs, position="last", batch_size=3)
    mean = wb.cache_pairs(tiny, pairs, position="mean", batch_size=3)
    picked = wb.cache_pairs(tiny, pairs, position=[0, 3, -1], batch_size=3)
    one = wb.cache_pairs(tiny, pairs, position=-2, batch_size=3)
    n, d = len(pairs), tiny.cfg.d_model
    assert last.with_instruction.shape == mean.with_instruction.shape == (n, 4, d)
    assert picked.with_instruction.shape == (n, 3, 4, d)
    for side in ("with_instruction", "without_instruction"):
        for i, a in enumerate(getattr(full, side)):
            assert a.shape[1:] == (4, d)
            torch.testing.assert_close(getattr(last, side)[i], a[-1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(getattr(mean, side)[i], a.mean(0), atol=1e-4, rtol=1e-5)
            torch.testing.assert_close(getattr(picked, side)[i], a[[0, 3, -1]], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(getattr(one, side)[i], a[-2], atol=1e-5, rtol=1e-5)
    lengths = [len(a) for a in full.with_instruction]
    assert picked.positions_with == [[0, 3, k - 1] for k in lengths]
    assert last.positions_with == [[k - 1] for k in lengths]
    assert full.positions_with == [list(range(k)) for k in lengths]


def test_record_fields_and_provenance(tiny, tiny_acts, tiny_pairs):
    acts = tiny_acts
    assert acts.layers == [0, 1, 2, 3] and acts.hook == "resid_post" and acts.position == "last"
    assert acts.n_pairs == len(tiny_pairs) and acts.pairs == tiny_pairs
    assert acts.with_instruction.device.type == "cpu" and acts.with_instruction.dtype == torch.float32
    assert acts.format == wb.default_format(tiny)
    assert acts.prompts_with == acts.format.apply_all(tiny.tokenizer, [p.with_instruction for p in tiny_pairs])
    assert acts.provenance["weight_hash"] == tiny.wb_info.weight_hash
    assert acts.provenance["model"] == "tiny-instruct" and acts.provenance["d_model"] == 64
    assert not torch.equal(acts.with_instruction, acts.without_instruction)


def test_layer_subset_and_negative_layers(tiny, tiny_pairs, tiny_acts):
    sub = wb.cache_pairs(tiny, tiny_pairs, layers=[3, -3], position="last", batch_size=4)
    assert sub.layers == [3, 1]
    torch.testing.assert_close(sub.with_instruction, tiny_acts.with_instruction[:, [3, 1]])
    torch.testing.assert_close(sub.without_instruction, tiny_acts.without_instruction[:, [3, 1]])


def test_other_hook_points(tiny, tiny_pairs, recorder):
    """resid_mid = resid_pre + attn_out, and resid_pre of block l is resid_post of block l - 1."""
    pairs = tiny_pairs[:3]
    kw = dict(layers=[1, 2], batch_size=6)
    mid = wb.cache_pairs_all_positions(tiny, pairs, hook="resid_mid", **kw)
    attn = wb.cache_pairs_all_positions(tiny, pairs, hook="hook_attn_out", **kw)  # the hook_ prefix is optional
    post = wb.cache_pairs_all_positions(tiny, pairs, layers=[0, 1], batch_size=6)
    assert mid.hook == "resid_mid"
    for m, a, p in zip(mid.with_instruction, attn.with_instruction, post.with_instruction):
        torch.testing.assert_close(m, p + a, atol=1e-4, rtol=1e-5)
    # and against TransformerLens' own hook on an unpadded forward
    tokens = torch.tensor(encode(tiny.tokenizer, mid.prompts_with[:1], mid.format))
    _, seen = recorder(tiny, tokens, ["blocks.2.hook_attn_out"])
    torch.testing.assert_close(attn.with_instruction[0][:, 1], seen["blocks.2.hook_attn_out"][0], atol=1e-5, rtol=1e-5)


def test_bad_arguments(tiny, tiny_pairs):
    pairs = tiny_pairs[:2]
    with pytest.raises(ValueError) as err:
        wb.cache_pairs(tiny, pairs, hook="resid_middle")
    assert "resid_middle" in str(err.value)
    for valid in ("resid_post", "resid_mid", "resid_pre", "attn_out", "mlp_out"):
        assert f"'{valid}'" in str(err.value)
    with pytest.raises(ValueError, match="layer 4 is out of range.*0..3"):
        wb.cache_pairs(tiny, pairs, layers=[0, 4])
    with pytest.raises(ValueError, match="layer -5 is out of range"):
        wb.cache_pairs(tiny, pairs, layers=[-5])
    with pytest.raises(ValueError, match=f"position 500 is beyond the prompt of pair '{pairs[0].key}'"):
        wb.cache_pairs(tiny, pairs, position=500)
    with pytest.raises(ValueError, match="position -1000 is beyond"):
        wb.cache_pairs(tiny, pairs, position=[0, -1000])
    with pytest.raises(ValueError, match="unknown position 'first'"):
        wb.cache_pairs(tiny, pairs, position="first")
    with pytest.raises(ValueError, match=r"position='all'.*cache_pairs_all_positions"):
        wb.cache_pairs(tiny, pairs, position="all")
    with pytest.raises(ValueError, match="empty pair list"):
        wb.cache_pairs(tiny, [])
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        wb.cache_pairs(tiny, pairs, batch_size=0)


def test_batch_size_does_not_change_results(tiny, tiny_pairs):
    one = wb.cache_pairs_all_positions(tiny, tiny_pairs, batch_size=1)
    seven = wb.cache_pairs_all_positions(tiny, tiny_pairs, batch_size=7)
    lengths = {len(a) for a in one.with_instruction + one.without_instruction}
    assert len(lengths) > 3  # the batches of 7 are padded
    for a, b in zip(one.with_instruction + one.without_instruction, seven.with_instruction + seven.without_instruction):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


_READ_BATCH = wc.read_batch


class _Counted:
    """Wraps cache.read_batch, counting calls and optionally failing after `fail_after`."""

    def __init__(self, fail_after: int | None = None):
        self.calls, self.fail_after = 0, fail_after

    def __call__(self, *args, **kwargs):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        return _READ_BATCH(*args, **kwargs)


def test_checkpoint_resumes_from_saved_batches(tiny, tiny_pairs, tmp_path, monkeypatch):
    kw = dict(position="last", batch_size=3)  # 16 prompts: 6 batches
    plain = wb.cache_pairs(tiny, tiny_pairs, **kw)

    interrupted = _Counted(fail_after=4)
    monkeypatch.setattr(wc, "read_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        wb.cache_pairs(tiny, tiny_pairs, checkpoint=tmp_path, **kw)
    saved = sorted(tmp_path.glob("batch-*.safetensors"))
    assert len(saved) == 4 and (tmp_path / "spec.json").is_file()

    saved[-1].write_bytes(saved[-1].read_bytes()[:50])  # the batch being written when cut off
    resumed = _Counted()
    monkeypatch.setattr(wc, "read_batch", resumed)
    again = wb.cache_pairs(tiny, tiny_pairs, checkpoint=tmp_path, **kw)
    assert resumed.calls == 3  # the truncated batch and the two never run
    assert len(list(tmp_path.glob("batch-*.safetensors"))) == 6
    torch.testing.assert_close(again.with_instruction, plain.with_instruction, atol=1e-6, rtol=0)
    torch.testing.assert_close(again.without_instruction, plain.without_instruction, atol=1e-6, rtol=0)

    complete = _Counted()
    monkeypatch.setattr(wc, "read_batch", complete)
    wb.cache_pairs(tiny, tiny_pairs, checkpoint=tmp_path, **kw)
    assert complete.calls == 0


def test_checkpoint_refuses_other_inputs(tiny, tiny_pairs, tmp_path):
    wb.cache_pairs(tiny, tiny_pairs[:2], checkpoint=tmp_path, layers=[1], batch_size=2)
    for change in (dict(layers=[2]), dict(layers=[1], position="mean"), dict(layers=[1], batch_size=1)):
        with pytest.raises(ValueError, match="written for other prompts"):
            wb.cache_pairs(tiny, tiny_pairs[:2], checkpoint=tmp_path, **{"batch_size": 2, **change})
    with pytest.raises(ValueError, match="written for other prompts"):
        wb.cache_pairs(tiny, tiny_pairs[1:3], checkpoint=tmp_path, layers=[1], batch_size=2)
    other = wb.load_model("tiny-instruct", seed=1)
    with pytest.raises(ValueError, match="written for other prompts"):
        wb.cache_pairs(other, tiny_pairs[:2], checkpoint=tmp_path, layers=[1], batch_size=2)


def test_non_finite_activations_raise(tiny, tiny_pairs):
    def poison(act, hook):
        return act * float("nan")

    with (
        tiny.hooks(fwd_hooks=[("blocks.1.hook_attn_out", poison)]),
        pytest.raises(FloatingPointError, match=f"pair '{tiny_pairs[0].key}'"),
    ):
        wb.cache_pairs(tiny, tiny_pairs[:2], layers=[2])
    # the same model, untouched, is fine again
    assert torch.isfinite(wb.cache_pairs(tiny, tiny_pairs[:2], layers=[2]).with_instruction).all()


def test_nan_weight_raises():
    model = wb.load_model("tiny-instruct")  # its own copy: the weights are corrupted
    with torch.no_grad():
        model.original_model.model.layers[0].mlp.down_proj.weight[5, 7] = float("nan")
    pair = wb.PromptPair("p", "Say hi. Use capitals.", "Say hi.")
    with pytest.raises(FloatingPointError, match="non-finite"):
        wb.cache_pairs(model, [pair], layers=[3])


def test_length_batches_keep_padding_low():
    from workbench.cache import length_batches

    lengths = [100, 90, 10, 9, 8, 7, 6, 5]
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches = length_batches(order, lengths, batch_size=4, max_tokens=200)
    assert batches == [[0, 1], [2, 3, 4, 5], [6, 7]]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) * lengths[b[0]] <= 200 for b in batches)
    assert length_batches([0], [500], 4, 10) == [[0]]  # one long prompt still gets its batch


def test_token_budget_does_not_change_results(tiny, tiny_pairs):
    wide = wb.cache_pairs(tiny, tiny_pairs, position="last", batch_size=16)
    narrow = wb.cache_pairs(tiny, tiny_pairs, position="last", batch_size=16, max_tokens=64)
    torch.testing.assert_close(wide.with_instruction, narrow.with_instruction, atol=1e-5, rtol=0)
    torch.testing.assert_close(wide.without_instruction, narrow.without_instruction, atol=1e-5, rtol=0)
