"""The unbridged twin: transformers' own model class on the bridge's weight tensors (shared, not
copied), with steering at the residual streams the bridge's hooks name. Generation uses it unless
the bridge carries the user's hooks."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench import twin as T

PROMPTS = ["Hi", "Tell me a story about a lighthouse keeper.", "Name a color."]


def test_twin_shares_every_weight_tensor(tiny):
    tw = T.twin(tiny)
    assert tw is not None and tw is T.twin(tiny)  # built once per model
    ours = {p.data_ptr() for p in tiny.original_model.parameters()}
    assert all(p.data_ptr() in ours for p in tw.parameters())
    assert not any(t.is_meta for t in [*tw.parameters(), *tw.buffers()])


def test_twin_forward_equals_the_bridge(tiny):
    tokens = torch.tensor([[1, 5, 9, 20, 33, 7]])
    with torch.no_grad():
        a = T.twin(tiny)(input_ids=tokens).logits
        b = tiny.original_model(input_ids=tokens).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_twin_hooks_see_the_bridges_residual_streams(tiny, recorder):
    """What a hook on the twin's decoder layer sees is what blocks.{l}.hook_resid_post /
    hook_resid_pre see on the bridge, and the handles are gone afterwards."""
    tokens = torch.tensor([[1, 5, 9, 20, 33, 7]])
    names = ["blocks.2.hook_resid_post", "blocks.1.hook_resid_pre"]
    _, want = recorder(tiny, tokens, names)
    got = {}

    def keep(name):
        def fn(x, hook=None):
            got[name] = x.detach().clone()
            return x

        return fn

    tw = T.twin(tiny)
    with torch.no_grad(), T.twin_hooks(tw, [(n, keep(n)) for n in names]):
        tw(input_ids=tokens)
    for n in names:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-4)  # sdpa vs eager
    assert not any(layer._forward_hooks or layer._forward_pre_hooks for layer in tw.model.layers)
    with pytest.raises(ValueError, match="cannot reach"), T.twin_hooks(tw, [("blocks.1.hook_attn_out", keep("x"))]):
        pass


def test_generation_uses_the_twin_and_resid_pre_steering_agrees(tiny, tiny_vec):
    # a vector derived at resid_pre, so the spec's hook matches the vector's
    pairs = wb.instruction_pairs(
        ["Say hi.", "Name a fruit.", "Count to three."], "change_case:english_lowercase", seed=0
    )
    pre = wb.derive(wb.cache_pairs(tiny, pairs, hook="resid_pre"))
    specs = [wb.Steering(pre, layer=2, mode="add", weight=30.0, hook="resid_pre")]
    fast = wb.generate_table(tiny, PROMPTS, specs, max_new_tokens=10, unbridged=True)
    slow = wb.generate_table(tiny, PROMPTS, specs, max_new_tokens=10, unbridged=False)
    assert list(fast["token_ids"]) == list(slow["token_ids"])
    plain = wb.generate_table(tiny, PROMPTS, max_new_tokens=10)
    assert list(fast["token_ids"]) != list(plain["token_ids"])


def test_user_hooks_on_the_bridge_still_fire(tiny, tiny_vec):
    """A hook of the user's on the bridge: generation falls back to the bridged path, so the
    hook fires on every decode step, and the tokens are those of the bridge."""
    calls = []

    def spy(x, hook):
        calls.append(x.shape[1])
        return x

    specs = [wb.Steering(tiny_vec, layer=1, mode="adjust")]
    with tiny.hooks(fwd_hooks=[("blocks.0.hook_resid_post", spy)]):
        table = wb.generate_table(tiny, PROMPTS, specs, max_new_tokens=6, stop=())
        with pytest.raises(ValueError, match="hooks of its own"):
            wb.generate_table(tiny, PROMPTS, specs, max_new_tokens=6, unbridged=True)
    assert len(calls) >= 6  # the prefill and every decode step
    bridged = wb.generate_table(tiny, PROMPTS, specs, max_new_tokens=6, stop=(), unbridged=False)
    assert list(table["token_ids"]) == list(bridged["token_ids"])
