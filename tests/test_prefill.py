"""The staged prefill (workbench/prefill.py): rows steered on the prompt from layer s on replay the
unsteered prompt's layers below s. Every row still equals the batch-1 full-recompute reference,
and the lower layers really ran on the distinct prompts only."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.prefill import first_steered_layers, worth_staging
from workbench.twin import layers_of, twin

N = 10


def _prompt_rows_per_layer(tw):
    """Per decoder layer of the twin, how many rows each multi-token forward (a prefill) brought."""
    seen: dict[int, list[int]] = {}
    handles = []
    for i, layer in enumerate(layers_of(tw)):

        def pre(mod, args, kwargs, i=i):
            x = args[0] if args else kwargs["hidden_states"]
            if x.shape[1] > 1:
                seen.setdefault(i, []).append(int(x.shape[0]))

        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
    return seen, handles


def test_a_sweep_over_layers_replays_the_lower_layers_and_keeps_every_token(tiny, tiny_vec, make_vector):
    prompts = ["Hi", "Tell me a story."]
    pre = make_vector(tiny, {2: torch.randn(64, generator=torch.Generator().manual_seed(1))}, hook="resid_pre")
    configs = [
        [],
        [wb.Steering(tiny_vec, layer=1, weight=40.0)],
        [wb.Steering(tiny_vec, layer=1, mode="adjust", weight=2.0)],
        [wb.Steering(tiny_vec, layer=2, weight=40.0, positions="prompt")],
        [
            wb.Steering(tiny_vec, layer=3, weight=60.0),
            wb.Steering(tiny_vec, layer=1, weight=30.0, positions="generated"),
        ],
        [wb.Steering(pre, layer=2, hook="resid_pre", weight=50.0)],
        [wb.Steering(tiny_vec, layer=0, weight=40.0)],  # from layer 0: nothing to replay
    ]
    rows_prompts = [p for _ in configs for p in prompts]
    rows_specs = [c for c in configs for _ in prompts]
    tw = twin(tiny)
    wb.generate(tiny, prompts[:1], max_new_tokens=1)  # the stack check's forwards run first
    seen, handles = _prompt_rows_per_layer(tw)
    try:
        table = wb.generate_table(tiny, rows_prompts, rows_specs, max_new_tokens=N, batch_size=len(rows_prompts))
    finally:
        for h in handles:
            h.remove()
    p = len(prompts)
    # layer l runs on the unsteered prompts, then on every row whose first steered layer is <= l
    firsts = [0, 1, 1, 2, 3, 2, 0]
    expect = {layer: [p] + [p * sum(f <= layer for f in firsts[1:])] for layer in range(4)}
    assert {layer: [seen[layer][0], sum(seen[layer][1:])] for layer in seen} == expect
    got = [list(t) for t in table["token_ids"]]
    for prompt, specs, tokens in zip(rows_prompts, rows_specs, got):
        assert tokens == wb.generate_reference(tiny, prompt, specs, max_new_tokens=N), (prompt, specs)
    assert len({tuple(t) for t in got}) > 2 * p  # the steering changed the answers
    bridged = wb.generate_table(
        tiny, rows_prompts, rows_specs, max_new_tokens=N, batch_size=len(rows_prompts), unbridged=False
    )
    assert [list(t) for t in bridged["token_ids"]] == got  # the bridge prefills every row in full


def test_first_steered_layers_and_when_staging_pays(tiny_vec):
    def spec(layer, **kw):
        return wb.Steering(tiny_vec, layer=layer, **{"weight": 5.0, **kw})

    ids = [[1, 2, 3]] * 5
    rows = [[], [spec(2)], [spec(3), spec(1)], [spec(1, positions="generated"), spec(3)], [spec(0, weight=0.0)]]
    assert first_steered_layers(ids, rows, 4) == [4, 2, 1, 3, 4]
    assert worth_staging([10, 20, 30, 30], n_prompts=1, n_layers=30)  # 30 + 30 layer passes of 120
    assert not worth_staging([0, 1, 30], n_prompts=1, n_layers=30)  # 30 + 59 of 90: no gain
    assert not worth_staging([30, 30], n_prompts=2, n_layers=30)  # nothing steers the prompt


@pytest.mark.parametrize("batch_size", [3, 64])
def test_staged_and_plain_prefill_agree_across_batch_sizes(tiny, tiny_vec, batch_size):
    """Batches of mixed stages, prompts and padding: the staged path (large batches) and small
    batches (where staging rarely pays) give the same tokens."""
    prompts = ["Hi", "What is two plus two? Answer briefly.", "Name a color."]
    configs = [[wb.Steering(tiny_vec, layer=layer, weight=w)] for layer in (1, 2, 3) for w in (20.0, 50.0)]
    rows_prompts = [p for _ in configs for p in prompts]
    rows_specs = [c for c in configs for _ in prompts]
    table = wb.generate_table(tiny, rows_prompts, rows_specs, max_new_tokens=N, batch_size=batch_size)
    alone = [
        list(wb.generate_table(tiny, [p], [s], max_new_tokens=N)["token_ids"][0])
        for p, s in zip(rows_prompts, rows_specs)
    ]
    assert [list(t) for t in table["token_ids"]] == alone


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm", "gemma"])
def test_staged_prefill_on_the_bundled_models(request, make_vector, name):
    """A layer sweep steering every position, on both bundled architectures (Gemma 3 mixes
    sliding-window and global layers): the layers below each row's steering ran on the distinct
    prompts only, and every row equals the batch-1 full-recompute reference."""
    model = request.getfixturevalue(name)
    n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
    low, high = n_layers // 3, 2 * n_layers // 3
    g = torch.Generator().manual_seed(0)
    vec = make_vector(model, {low: torch.randn(d_model, generator=g), high: torch.randn(d_model, generator=g)})
    norm = float(model.cfg.d_model) ** 0.5  # a residual-scale push: the answers change
    prompts = ["Hi", "Describe how a river shapes the valley it flows through."]
    configs = [[], [wb.Steering(vec, layer=low, weight=8 * norm)], [wb.Steering(vec, layer=high, weight=8 * norm)]]
    rows_prompts = [p for _ in configs for p in prompts]
    rows_specs = [c for c in configs for _ in prompts]
    tw = twin(model)
    wb.generate(model, prompts[:1], max_new_tokens=1)
    seen, handles = _prompt_rows_per_layer(tw)
    try:
        table = wb.generate_table(model, rows_prompts, rows_specs, max_new_tokens=8, batch_size=len(rows_prompts))
    finally:
        for h in handles:
            h.remove()
    p = len(prompts)
    assert [sum(seen[0]), sum(seen[low]), sum(seen[high])] == [p, 2 * p, 3 * p]
    got = [list(t) for t in table["token_ids"]]
    assert got[2:4] != got[:2] and got[4:] != got[:2], "the steering changed nothing"
    for prompt, specs, tokens in zip(rows_prompts, rows_specs, got):
        ref = wb.generate_reference(model, prompt, specs, max_new_tokens=8)
        assert tokens == ref, (prompt, specs, model.tokenizer.decode(tokens), model.tokenizer.decode(ref))
