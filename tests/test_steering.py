"""Steering: the patched layer changes by exactly the formula and nothing upstream changes;
invariants of the modes; hooks are always removed; bad specs are refused."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import workbench as wb
from workbench.prompts import encode

NAMES = [f"blocks.{l}.hook_resid_post" for l in range(4)]


@pytest.fixture(scope="module")
def tokens(tiny):
    fmt = wb.default_format(tiny)
    texts = fmt.apply_all(tiny.tokenizer, ["Tell me about cats.", "Tell me about dogs."])
    ids = encode(tiny.tokenizer, texts, fmt)
    assert len(ids[0]) == len(ids[1])
    return torch.tensor(ids)


@pytest.fixture(scope="module")
def base(tiny, tokens, recorder):
    return recorder(tiny, tokens, NAMES)


def _steered(model, tokens, recorder, *specs, **kwargs):
    with wb.steer(model, *specs, **kwargs):
        return recorder(model, tokens, NAMES)


def _scale(x):
    return float(x.abs().max())


def _proj(x, u):
    return x @ u


def test_add_changes_only_the_patched_layer_by_w_v(tiny, tiny_vec, tokens, base, recorder):
    spec = wb.Steering(tiny_vec, layer=2, mode="add", weight=3.0)
    logits, st = _steered(tiny, tokens, recorder, spec)
    _, acts = base
    for layer in (0, 1):
        assert torch.equal(st[NAMES[layer]], acts[NAMES[layer]])
    expected = acts[NAMES[2]] + 3.0 * tiny_vec.vector(2)
    torch.testing.assert_close(st[NAMES[2]], expected, atol=1e-5 * _scale(expected), rtol=0)
    assert not torch.allclose(st[NAMES[3]], acts[NAMES[3]])
    assert not torch.allclose(logits, base[0])


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_adjust_sets_the_projection_to_z_bar(tiny, tiny_vec, tokens, base, recorder, weight):
    layer, u, z = 1, tiny_vec.direction(1), tiny_vec.z_bar(1)
    _, st = _steered(tiny, tokens, recorder, wb.Steering(tiny_vec, layer=layer, mode="adjust", weight=weight))
    before, after = base[1][NAMES[layer]], st[NAMES[layer]]
    assert torch.equal(st[NAMES[0]], base[1][NAMES[0]])
    p0, p1 = _proj(before, u), _proj(after, u)
    assert (p0 - z).abs().min() > 1.0  # the test means something: every position moves
    # the projection moves `weight` of the way to z-bar at every position ...
    torch.testing.assert_close(p1, p0 + weight * (z - p0), atol=1e-4 * _scale(before), rtol=0)
    # ... and the part orthogonal to u is untouched
    torch.testing.assert_close(
        after - p1[..., None] * u, before - p0[..., None] * u, atol=1e-5 * _scale(before), rtol=0
    )


def test_ablate_removes_the_component(tiny, tiny_vec, tokens, base, recorder):
    layer, u = 3, tiny_vec.direction(3)
    _, st = _steered(tiny, tokens, recorder, wb.Steering(tiny_vec, layer=layer, mode="ablate"))
    before, after = base[1][NAMES[layer]], st[NAMES[layer]]
    for earlier in range(layer):
        assert torch.equal(st[NAMES[earlier]], base[1][NAMES[earlier]])
    assert _proj(before, u).abs().max() > 1.0
    assert _proj(after, u).abs().max() < 1e-5 * _scale(before)
    torch.testing.assert_close(after, before - _proj(before, u)[..., None] * u, atol=1e-5 * _scale(before), rtol=0)


def test_positions_in_a_plain_forward(tiny, tiny_vec, tokens, base, recorder):
    """Outside generation every token is prompt: 'prompt' is 'all', 'generated' is nothing."""
    spec = wb.Steering(tiny_vec, layer=2, weight=5.0)
    _, everywhere = _steered(tiny, tokens, recorder, spec)
    _, prompt = _steered(tiny, tokens, recorder, dataclasses.replace(spec, positions="prompt"))
    logits, _ = _steered(tiny, tokens, recorder, dataclasses.replace(spec, positions="generated"))
    _, picked = _steered(tiny, tokens, recorder, dataclasses.replace(spec, positions=[0, -1]))
    assert torch.equal(prompt[NAMES[2]], everywhere[NAMES[2]])
    assert torch.equal(logits, base[0])
    n = tokens.shape[1]
    changed = (picked[NAMES[2]] != base[1][NAMES[2]]).any(-1)  # (batch, pos)
    assert changed[:, [0, n - 1]].all() and changed.sum() == 2 * len(tokens)
    torch.testing.assert_close(picked[NAMES[2]][:, -1], everywhere[NAMES[2]][:, -1])


@pytest.mark.parametrize("mode", ["add", "adjust", "ablate"])
def test_weight_zero_and_no_specs_change_nothing(tiny, tiny_vec, tokens, base, recorder, mode):
    logits, _ = _steered(tiny, tokens, recorder, wb.Steering(tiny_vec, layer=1, mode=mode, weight=0.0))
    assert torch.equal(logits, base[0])
    logits, _ = _steered(tiny, tokens, recorder)
    assert torch.equal(logits, base[0])


def test_add_weight_and_vector_scale_are_interchangeable(tiny, tiny_vec, tokens, recorder):
    a, _ = _steered(tiny, tokens, recorder, wb.Steering(tiny_vec, layer=2, weight=2.0))
    b, _ = _steered(tiny, tokens, recorder, wb.Steering(2 * tiny_vec, layer=2, weight=1.0))
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_negated_vector_equals_negative_weight(tiny, tiny_vec, tokens, base, recorder):
    """The paper's exclusion: steering with -v is adding v with a negative weight."""
    a, _ = _steered(tiny, tokens, recorder, wb.Steering(-tiny_vec, layer=2, weight=4.0))
    b, _ = _steered(tiny, tokens, recorder, wb.Steering(tiny_vec, layer=2, weight=-4.0))
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(a, base[0])
    # adjust and ablate only see the line through u, so the sign of v cannot matter
    for mode in ("adjust", "ablate"):
        c, _ = _steered(tiny, tokens, recorder, wb.Steering(-tiny_vec, layer=2, mode=mode))
        d, _ = _steered(tiny, tokens, recorder, wb.Steering(tiny_vec, layer=2, mode=mode))
        torch.testing.assert_close(c, d, atol=1e-4, rtol=1e-5)


def test_adjust_to_the_current_projection_is_a_no_op(tiny, tiny_vec, recorder):
    layer = 2
    one = torch.tensor([[tiny.tokenizer.convert_tokens_to_ids("<|im_start|>")]])  # one position
    logits, acts = recorder(tiny, one, NAMES)
    current = float(acts[NAMES[layer]][0, 0] @ tiny_vec.direction(layer))
    z_bars = tiny_vec.z_bars.clone()
    z_bars[tiny_vec.layers.index(layer)] = current
    here = dataclasses.replace(tiny_vec, z_bars=z_bars)
    assert abs(current - tiny_vec.z_bar(layer)) > 1.0  # the original z-bar would change it
    got, st = _steered(tiny, one, recorder, wb.Steering(here, layer=layer, mode="adjust"))
    scale = _scale(acts[NAMES[layer]])
    torch.testing.assert_close(st[NAMES[layer]], acts[NAMES[layer]], atol=1e-5 * scale, rtol=0)
    torch.testing.assert_close(got, logits, atol=1e-4, rtol=1e-5)
    moved, _ = _steered(tiny, one, recorder, wb.Steering(tiny_vec, layer=layer, mode="adjust"))
    assert not torch.allclose(moved, logits, atol=1e-3)


def test_specs_on_different_layers_commute(tiny, tiny_vec, tokens, recorder):
    s1 = wb.Steering(tiny_vec, layer=1, mode="add", weight=6.0)
    s2 = wb.Steering(tiny_vec, layer=3, mode="adjust")
    s3 = wb.Steering(-tiny_vec, layer=2, mode="ablate", positions=(1, -2))
    a, _ = _steered(tiny, tokens, recorder, s1, s2, s3)
    b, _ = _steered(tiny, tokens, recorder, s3, s2, s1)
    assert torch.equal(a, b)
    # two additions at one layer commute too
    c, _ = _steered(tiny, tokens, recorder, s1, dataclasses.replace(s1, vector=2 * tiny_vec, weight=-1.5))
    d, _ = _steered(tiny, tokens, recorder, dataclasses.replace(s1, vector=2 * tiny_vec, weight=-1.5), s1)
    torch.testing.assert_close(c, d, atol=1e-5, rtol=1e-5)


def _count(model, name="blocks.2.hook_resid_post"):
    return len(model.hook_dict[name]._forward_hooks)


def test_hooks_are_removed_on_exit_and_on_error(tiny, tiny_vec, tokens, base, recorder):
    spec = wb.Steering(tiny_vec, layer=2, weight=3.0)
    assert _count(tiny) == 0 and not tiny.list_hooks()
    with wb.steer(tiny, spec):
        assert _count(tiny) == 1
    assert _count(tiny) == 0 and not tiny.list_hooks()
    with (
        pytest.raises(RuntimeError, match="boom"),
        wb.steer(tiny, spec, wb.Steering(tiny_vec, layer=0, mode="ablate")),
    ):
        assert _count(tiny) == 1 and _count(tiny, "blocks.0.hook_resid_post") == 1
        raise RuntimeError("boom")
    assert not tiny.list_hooks()
    logits, _ = recorder(tiny, tokens, NAMES)
    assert torch.equal(logits, base[0])  # the model is as it was


def test_user_hooks_survive_steering(tiny, tiny_vec, tokens, recorder):
    calls = []
    tiny.add_hook("blocks.2.hook_resid_post", lambda act, hook: calls.append(1))
    try:
        with wb.steer(tiny, wb.Steering(tiny_vec, layer=2, weight=3.0)):
            assert _count(tiny) == 2
        with pytest.raises(ValueError), wb.steer(tiny, wb.Steering(tiny_vec, layer=2)):
            raise ValueError
        assert _count(tiny) == 1
        calls.clear()
        recorder(tiny, tokens, NAMES)
        assert calls == [1]
    finally:
        tiny.reset_hooks()


def test_nested_steering(tiny, tiny_vec, tokens, base, recorder):
    outer = wb.Steering(tiny_vec, layer=1, weight=5.0)
    inner = wb.Steering(tiny_vec, layer=3, mode="ablate")
    both, _ = _steered(tiny, tokens, recorder, outer, inner)
    outer_only, _ = _steered(tiny, tokens, recorder, outer)
    with wb.steer(tiny, outer):
        with wb.steer(tiny, inner):
            assert torch.equal(recorder(tiny, tokens, NAMES)[0], both)
        assert _count(tiny, "blocks.1.hook_resid_post") == 1 and _count(tiny, "blocks.3.hook_resid_post") == 0
        assert torch.equal(recorder(tiny, tokens, NAMES)[0], outer_only)
    assert torch.equal(recorder(tiny, tokens, NAMES)[0], base[0])


def test_per_row_specs_in_a_plain_forward(tiny, tiny_vec, tokens, base, recorder):
    spec = wb.Steering(tiny_vec, layer=2, mode="adjust")
    rows, _ = _steered(tiny, tokens, recorder, rows=[[spec], []])
    alone, _ = _steered(tiny, tokens[:1], recorder, spec)
    torch.testing.assert_close(rows[:1], alone, atol=1e-5, rtol=1e-5)
    assert torch.equal(rows[1], base[0][1])
    with pytest.raises(ValueError, match="not both"), wb.steer(tiny, spec, rows=[[spec]]):
        pass


def test_specs_are_checked_against_the_model(tiny, tiny_vec, make_vector):
    narrow = make_vector(tiny, {1: torch.ones(32)})
    with pytest.raises(ValueError, match="width 32"), wb.steer(tiny, wb.Steering(narrow, layer=1)):
        pass
    foreign = make_vector(tiny, {1: torch.ones(64)}, model="another", weight_hash="f" * 64)
    with pytest.raises(ValueError, match="allow_cross_model=True"), wb.steer(tiny, wb.Steering(foreign, layer=1)):
        pass
    with wb.steer(tiny, wb.Steering(foreign, layer=1, allow_cross_model=True)):
        assert _count(tiny, "blocks.1.hook_resid_post") == 1
    deep = make_vector(tiny, {9: torch.ones(64)})
    with pytest.raises(ValueError, match="layer 9.*only 4 layers"), wb.steer(tiny, wb.Steering(deep, layer=9)):
        pass
    odd = make_vector(tiny, {1: torch.ones(64)}, hook="resid_middle")  # spec and vector agree
    with (
        pytest.raises(ValueError, match="unknown hook point 'resid_middle'"),
        wb.steer(tiny, wb.Steering(odd, layer=1, hook="resid_middle")),
    ):
        pass
    with pytest.raises(TypeError, match="wb.Steering"), wb.steer(tiny, tiny_vec):
        pass


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(layer=7), "layer 7 is not among the vector's layers"),
        (dict(layer=-1), "layer -1 is not among"),
        (dict(layer=1, weight=float("nan")), "finite number"),
        (dict(layer=1, weight=float("inf")), "finite number"),
        (dict(layer=1, weight="2"), "finite number"),
        (dict(layer=1, mode="scale"), "unknown steering mode 'scale'"),
        (dict(layer=1, positions="last"), "unknown positions 'last'"),
        (dict(layer=1, positions=()), "empty tuple"),
    ],
)
def test_bad_specs(tiny_vec, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        wb.Steering(tiny_vec, **kwargs)


def test_spec_normalises_positions_and_describes_itself(tiny_vec):
    spec = wb.Steering(tiny_vec, layer=2, mode="adjust", weight=0.5, positions=[0, -1])
    assert spec.positions == (0, -1)
    assert spec.describe() == "adjust change_case:english_lowercase @L2 w=0.5 pos=[0, -1]"


def test_weight_accepts_any_real_number(tiny_vec):
    import fractions

    import numpy as np

    for weight in (np.float32(2), np.int64(2), torch.tensor(2.0), 2, fractions.Fraction(2)):
        spec = wb.Steering(tiny_vec, layer=1, weight=weight)
        assert spec.weight == 2.0 and type(spec.weight) is float, weight
    for bad in (True, "2", None, torch.tensor([1.0, 2.0]), np.float32("nan"), torch.tensor(float("inf"))):
        with pytest.raises(ValueError, match="finite number.*Fix: pass a real number"):
            wb.Steering(tiny_vec, layer=1, weight=bad)


def test_positions_accept_one_index(tiny_vec):
    import numpy as np

    for one in (5, np.int64(5), torch.tensor(5)):
        assert wb.Steering(tiny_vec, layer=1, positions=one).positions == (5,)
    assert wb.Steering(tiny_vec, layer=1, positions=torch.tensor([0, -1])).positions == (0, -1)
    for bad in (1.5, (0, 1.5), (True,), [None]):
        with pytest.raises(ValueError, match="token index or a tuple of token indices"):
            wb.Steering(tiny_vec, layer=1, positions=bad)


def test_spec_hook_must_be_the_vectors(tiny, make_vector):
    """A vector derived at resid_pre would otherwise be steered at resid_post."""
    pre = make_vector(tiny, {1: torch.ones(64)}, hook="resid_pre")
    with pytest.raises(
        ValueError, match="derived at hook 'resid_pre' but the spec steers at 'resid_post'. Fix: pass hook='resid_pre'"
    ):
        wb.Steering(pre, layer=1)
    for hook in ("resid_pre", "hook_resid_pre"):
        assert wb.Steering(pre, layer=1, hook=hook).hook == hook
    full = make_vector(tiny, {1: torch.ones(64)}, hook="blocks.1.hook_resid_pre")
    assert wb.Steering(full, layer=1, hook="resid_pre").layer == 1
    unknown = make_vector(tiny, {1: torch.ones(64)}, hook=None)  # no record: nothing to check
    assert wb.Steering(unknown, layer=1, hook="attn_out").hook == "attn_out"
    with wb.steer(tiny, wb.Steering(pre, layer=1, hook="resid_pre")):
        assert _count(tiny, "blocks.1.hook_resid_pre") == 1


def test_positions_out_of_reach_in_a_plain_forward(tiny, tiny_vec, tokens):
    n = tokens.shape[1]
    for positions in ((1000,), (0, n), (-n - 1,)):
        spec = wb.Steering(tiny_vec, layer=1, positions=positions)
        with (
            pytest.raises(ValueError, match=rf"positions \[-?\d+\] reach no token.*{n} prompt tokens.*Fix"),
            wb.steer(tiny, spec),
            torch.no_grad(),
        ):
            tiny(tokens)
    with wb.steer(tiny, wb.Steering(tiny_vec, layer=1, positions=(n - 1, -n))), torch.no_grad():
        tiny(tokens)


def _hook(tiny, rows, ctx):
    from workbench.hooks import build_hooks

    [(_, fn)] = build_hooks(tiny, rows, ctx)
    return fn


def test_hook_follows_the_activations_device_and_dtype(tiny, tiny_vec):
    """Terms are built on the CPU in float32; the hook casts them to the activation's device and
    dtype (here the meta device and bfloat16, standing in for an accelerator), once per pair."""
    from workbench.hooks import PositionContext

    specs = [
        wb.Steering(tiny_vec, layer=1, mode="adjust", positions=(0, -1)),
        wb.Steering(tiny_vec, layer=1, weight=2.0),
    ]
    plain = _hook(tiny, [specs], PositionContext())
    x = torch.randn(2, 5, 64)
    for device, dtype in [("meta", torch.bfloat16), ("meta", torch.float32), ("cpu", torch.bfloat16)]:
        out = plain(x.to(device, dtype))
        assert (out.device.type, out.dtype, out.shape) == (device, dtype, x.shape)
    torch.testing.assert_close(plain(x.bfloat16()).float(), plain(x), atol=0.1, rtol=0.02)
    # generation's context: offsets and lengths on the CPU, a dropped row, activations elsewhere
    ctx = PositionContext(torch.tensor([0, 2, 1]), torch.tensor([5, 3, 4]), 0, new_tokens=4)
    rows = [[specs[0]], [specs[1]], []]
    generating = _hook(tiny, rows, ctx)
    ctx.rows = torch.tensor([0, 2])
    ctx.start = 5
    out = generating(torch.zeros(2, 1, 64, device="meta", dtype=torch.bfloat16))
    assert (out.device.type, out.dtype, out.shape) == ("meta", torch.bfloat16, (2, 1, 64))
    pos, lens = ctx.unpadded(2, 1, torch.device("meta"))
    assert pos.device.type == lens.device.type == "meta"
    cpu = generating(torch.ones(2, 1, 64))  # the same hook, back on the CPU: row 2 is unsteered
    assert torch.equal(cpu[1], torch.ones(1, 64))


def test_hook_casts_each_term_once_per_device_and_dtype(tiny, tiny_vec, monkeypatch):
    """A decode step must not copy the vectors again."""
    from workbench.hooks import PositionContext, _Term

    casts, original = [], _Term.on

    def counting(self, device, dtype):
        if (torch.device(device), dtype) not in self._cast:
            casts.append((str(device), dtype))
        return original(self, device, dtype)

    monkeypatch.setattr(_Term, "on", counting)
    hook = _hook(tiny, [[wb.Steering(tiny_vec, layer=1)]], PositionContext())
    for _ in range(3):
        hook(torch.zeros(1, 2, 64))
        hook(torch.zeros(1, 2, 64, dtype=torch.bfloat16))
    assert casts == [("cpu", torch.float32), ("cpu", torch.bfloat16)]
