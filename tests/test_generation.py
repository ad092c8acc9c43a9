"""Generation: batched, KV-cached, left-padded generation equals the batch-1 full-recompute
reference for every steering mode and position set, and HF's own generate when unsteered."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import workbench as wb
from workbench.generation import default_stops, eos_ids
from workbench.prompts import PromptFormat, encode

N_TINY = 12
PROMPTS = [  # very different lengths; with batch_size=3 both batches are padded
    "Hi",
    "Tell me a story.",
    (
        "Write a long and detailed account of the history of bread making, from the first "
        "flatbreads baked on hot stones to modern industrial bakeries, with dates."
    ),
    "What is two plus two? Answer briefly.",
    "Name a color.",
]


def _ids(model, prompt, fmt=None):
    fmt = fmt or wb.default_format(model)
    return encode(model.tokenizer, [fmt.apply(model.tokenizer, prompt)], fmt)[0]


def _tokens(table) -> list[list[int]]:
    return [list(t) for t in table["token_ids"]]


@pytest.fixture(scope="module")
def unsteered(tiny):
    return _tokens(wb.generate_table(tiny, PROMPTS, max_new_tokens=N_TINY, batch_size=3))


def _positions(tiny):
    """Named sets, and explicit indices including -1 and one that lands on a generated token of
    the shortest prompt (explicit indices count tokens of the unpadded sequence from 0)."""
    generated_index = len(_ids(tiny, "Hi")) + 2
    return ["all", "prompt", "generated", (-1,), (0, 5, -1, generated_index)]


@pytest.mark.parametrize("unbridged", [None, False], ids=["twin", "bridge"])
@pytest.mark.parametrize(
    "mode, weight", [("add", 40.0), ("adjust", 1.0), ("ablate", 1.0)], ids=["add", "adjust", "ablate"]
)
@pytest.mark.parametrize("pos_index", range(5), ids=["all", "prompt", "generated", "minus1", "explicit"])
def test_batched_equals_reference_on_tiny(tiny, tiny_vec, unsteered, mode, weight, pos_index, unbridged):
    """Both decode paths (the unbridged twin, chosen by default, and the bridge) against the
    bridge's batch-1 full-recompute loop."""
    positions = _positions(tiny)[pos_index]
    specs = [wb.Steering(tiny_vec, layer=1, mode=mode, weight=weight, positions=positions)]
    table = wb.generate_table(tiny, PROMPTS, specs, max_new_tokens=N_TINY, batch_size=3, unbridged=unbridged)
    got = _tokens(table)
    for prompt, tokens in zip(PROMPTS, got):
        assert tokens == wb.generate_reference(tiny, prompt, specs, max_new_tokens=N_TINY), prompt
    assert got != unsteered  # the steering did something, so agreement means something
    assert list(table["prompt"]) == PROMPTS  # back in input order after length sorting
    assert set(table["steering"]) == {specs[0].describe()}


def test_first_token_is_untouched_when_steering_only_generated_positions(tiny, tiny_vec, unsteered):
    spec = wb.Steering(tiny_vec, layer=1, weight=40.0, positions="generated")
    got = _tokens(wb.generate_table(tiny, PROMPTS, [spec], max_new_tokens=N_TINY, batch_size=3))
    assert [t[0] for t in got] == [t[0] for t in unsteered]


@pytest.mark.parametrize("mode", ["add", "adjust"])
def test_named_positions_mean_the_prompt_and_generated_tokens(tiny, tiny_vec, mode):
    """'prompt' is tokens 0..n-1 of the unpadded prompt and 'generated' is n onwards: the same
    tokens as explicit indices, which the plain-forward test checks position by position."""
    weight = 40.0 if mode == "add" else 1.0
    spec = wb.Steering(tiny_vec, layer=1, mode=mode, weight=weight)
    for name in ("prompt", "generated"):
        named = [dataclasses.replace(spec, positions=name)]
        table = _tokens(wb.generate_table(tiny, PROMPTS, named, max_new_tokens=N_TINY, batch_size=3))
        for prompt, tokens in zip(PROMPTS, table):
            n = len(_ids(tiny, prompt))
            explicit = range(n) if name == "prompt" else range(n, n + N_TINY)
            spelled = [dataclasses.replace(spec, positions=tuple(explicit))]
            assert tokens == wb.generate_reference(tiny, prompt, spelled, max_new_tokens=N_TINY), (name, prompt)


def test_per_row_steering_equals_each_row_alone(tiny, tiny_vec):
    configs = [
        [wb.Steering(tiny_vec, layer=1, weight=40.0)],
        [wb.Steering(tiny_vec, layer=2, mode="adjust", positions="prompt")],
        [],
        [
            wb.Steering(tiny_vec, layer=3, mode="ablate"),
            wb.Steering(-tiny_vec, layer=0, weight=25.0, positions="generated"),
        ],
        [wb.Steering(tiny_vec, layer=1, weight=-30.0, positions=(-1,))],
    ]
    table = wb.generate_table(tiny, PROMPTS, configs, max_new_tokens=N_TINY, batch_size=5)
    for i, (prompt, specs) in enumerate(zip(PROMPTS, configs)):
        alone = wb.generate_table(tiny, [prompt], [specs], max_new_tokens=N_TINY)
        assert list(table["token_ids"][i]) == list(alone["token_ids"][0]), prompt
        assert list(table["token_ids"][i]) == wb.generate_reference(tiny, prompt, specs, max_new_tokens=N_TINY)
    assert table["steering"][2] == "none"
    # one list of specs means the same list for every prompt
    spec = configs[0]
    shared = wb.generate_table(tiny, PROMPTS[:2], spec, max_new_tokens=N_TINY)
    per_row = wb.generate_table(tiny, PROMPTS[:2], [spec, spec], max_new_tokens=N_TINY)
    assert _tokens(shared) == _tokens(per_row)


def test_zero_weight_and_no_steering_change_nothing(tiny, tiny_vec, unsteered):
    for steering in ([], [[] for _ in PROMPTS], [wb.Steering(tiny_vec, layer=2, mode="adjust", weight=0.0)]):
        assert _tokens(wb.generate_table(tiny, PROMPTS, steering, max_new_tokens=N_TINY, batch_size=3)) == unsteered
    assert _tokens(wb.generate_table(tiny, PROMPTS, max_new_tokens=N_TINY, batch_size=1)) == unsteered


def _prefill_rows(module):
    """Record the batch size of every forward of `module` that reads more than one token."""
    seen: list[int] = []

    def pre(mod, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            seen.append(int(ids.shape[0]))

    return seen, module.register_forward_pre_hook(pre, with_kwargs=True)


@pytest.mark.parametrize("unbridged", [None, False], ids=["twin", "bridge"])
def test_a_sweep_shares_one_prefill_per_prompt_and_keeps_every_token(tiny, tiny_vec, unbridged):
    """Rows whose steering leaves the prompt alone (generated positions, weight 0, an index past
    the prompt, none) run one prefill per distinct prompt, its KV rows expanded; rows that steer
    the prompt get their own. Every row's tokens equal the batch-1 reference, and the prefill
    ran on as many rows as there are distinct (prompt, prompt steering)."""
    from workbench.decoding import forward_module

    prompts = ["Hi", "Yo"]  # close in length: one explicit index past both is reachable from each
    gen_index = max(len(_ids(tiny, p)) for p in prompts) + 2  # past both prompts: a generated token
    configs = [
        [],
        [wb.Steering(tiny_vec, layer=1, weight=40.0, positions="generated")],
        [wb.Steering(tiny_vec, layer=2, mode="adjust", weight=1.0, positions="generated")],
        [wb.Steering(tiny_vec, layer=1, weight=0.0)],
        [wb.Steering(tiny_vec, layer=3, weight=30.0, positions=(gen_index,))],
        [wb.Steering(tiny_vec, layer=1, weight=40.0)],  # steers the prompt: a prefill of its own
    ]
    rows_prompts = [p for _ in configs for p in prompts]
    rows_specs = [c for c in configs for _ in prompts]
    module = forward_module(tiny, rows_specs, unbridged)
    wb.generate(tiny, prompts[:1], max_new_tokens=1, unbridged=unbridged)  # the stack check's forwards run first
    seen, handle = _prefill_rows(module)
    try:
        table = wb.generate_table(
            tiny, rows_prompts, rows_specs, max_new_tokens=N_TINY, batch_size=len(rows_prompts), unbridged=unbridged
        )
    finally:
        handle.remove()
    assert seen == [2 * len(prompts)], "one prefill per prompt, and one per prompt for the row that steers it"
    got = _tokens(table)
    for prompt, specs, tokens in zip(rows_prompts, rows_specs, got):
        assert tokens == wb.generate_reference(tiny, prompt, specs, max_new_tokens=N_TINY), (prompt, specs)
    assert len({tuple(t) for t in got}) > len(prompts) + 1  # the generated-token steering did something


def test_rows_that_decode_alike_decode_once(tiny, tiny_vec, monkeypatch):
    """Greedy: weight 0 at any layer is no steering, and a repeated (prompt, steering) is the same
    row: each distinct row is decoded once and copied, every row keeps its own steering label and
    equals the batch-1 reference. Sampling decodes every row."""
    from workbench import generation

    decoded: list[int] = []
    real = generation.decode_batch

    def counting(model, hf, ids, *args, **kwargs):
        decoded.append(len(ids))
        return real(model, hf, ids, *args, **kwargs)

    monkeypatch.setattr(generation, "decode_batch", counting)
    steer = wb.Steering(tiny_vec, layer=1, weight=40.0)
    configs = [
        [],
        [wb.Steering(tiny_vec, layer=1, weight=0.0)],
        [wb.Steering(tiny_vec, layer=3, mode="adjust", weight=0.0)],
        [steer],
        [steer],
        [steer, wb.Steering(tiny_vec, layer=2, weight=0.0)],
    ]
    prompts = PROMPTS[:2]
    rows_prompts = [p for _ in configs for p in prompts]
    rows_specs = [c for c in configs for _ in prompts]
    table = wb.generate_table(tiny, rows_prompts, rows_specs, max_new_tokens=N_TINY, batch_size=64)
    assert decoded == [2 * len(prompts)], "unsteered and steered, once per prompt"
    for prompt, specs, tokens in zip(rows_prompts, rows_specs, _tokens(table)):
        assert tokens == wb.generate_reference(tiny, prompt, specs, max_new_tokens=N_TINY), (prompt, specs)
    assert list(table["steering"][: len(prompts)]) == ["none"] * len(prompts)
    assert all("w=0 " in label for label in table["steering"][len(prompts) : 3 * len(prompts)])
    decoded.clear()
    wb.generate_table(
        tiny, rows_prompts, rows_specs, max_new_tokens=N_TINY, batch_size=64, sampling=wb.Sampling(temperature=1.0)
    )
    assert decoded == [len(rows_prompts)]


def test_prefill_groups_name_what_leaves_the_prompt_alone(tiny_vec):
    from workbench.decoding import prefill_groups, touches_prompt

    def spec(**kw):
        return wb.Steering(tiny_vec, layer=1, **{"weight": 5.0, **kw})

    assert touches_prompt(spec(), 4) and touches_prompt(spec(positions="prompt"), 4)
    assert touches_prompt(spec(positions=(-1,)), 4) and touches_prompt(spec(positions=(3, 9)), 4)
    assert not touches_prompt(spec(positions="generated"), 4)
    assert not touches_prompt(spec(weight=0.0), 4) and not touches_prompt(spec(positions=(4, 9)), 4)
    ids = [[1, 2, 3], [1, 2, 3], [1, 2, 4], [1, 2, 3], [1, 2, 3]]
    rows = [[], [spec(positions="generated")], [], [spec()], [spec()]]
    assert prefill_groups(ids, rows) == ([0, 2, 3], [0, 0, 1, 2, 2])


def _hf_generate(model, ids, n):
    """HF's own greedy generate on one unpadded prompt; the new tokens up to the first EOS."""
    hf = model.original_model
    with torch.no_grad():
        out = hf.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=n,
            do_sample=False,
            top_p=None,
            top_k=None,
            temperature=None,
            pad_token_id=model.tokenizer.pad_token_id,
        )[0, len(ids) :].tolist()
    stop = eos_ids(model)
    return out[: next((i for i, t in enumerate(out) if t in stop), len(out))]


def test_unsteered_equals_hf_generate_on_tiny(tiny, unsteered):
    for prompt, ours in zip(PROMPTS, unsteered):
        assert ours == _hf_generate(tiny, _ids(tiny, prompt), N_TINY)


def test_generate_returns_the_responses(tiny, tiny_base):
    table = wb.generate_table(tiny, PROMPTS[:2], max_new_tokens=6)
    assert wb.generate(tiny, PROMPTS[:2], max_new_tokens=6) == list(table["response"])
    assert list(table.columns) == [
        "prompt",
        "formatted",
        "response",
        "n_tokens",
        "finish_reason",
        "steering",
        "truncated_tokens",
        "token_ids",
    ]
    assert list(table["formatted"]) == wb.default_format(tiny).apply_all(tiny.tokenizer, PROMPTS[:2])
    assert list(table["n_tokens"]) == [6, 6] and set(table["finish_reason"]) == {"length"}
    base = wb.generate_table(tiny_base, ["Hi"], max_new_tokens=4, stop=())
    assert base["formatted"][0] == "Q: Hi\nA:"


def test_seeded_sampling(tiny):
    hot = wb.Sampling(temperature=1.0, seed=3)
    a = wb.generate(tiny, PROMPTS[:3], sampling=hot, max_new_tokens=16)
    b = wb.generate(tiny, PROMPTS[:3], sampling=hot, max_new_tokens=16)
    c = wb.generate(tiny, PROMPTS[:3], sampling=dataclasses.replace(hot, seed=4), max_new_tokens=16)
    assert a == b and a != c
    greedy = wb.generate(tiny, PROMPTS[:3], max_new_tokens=16)
    assert wb.generate(tiny, PROMPTS[:3], sampling=wb.Sampling(temperature=0.0, seed=9), max_new_tokens=16) == greedy
    assert a != greedy
    nucleus = wb.Sampling(temperature=1.0, top_p=1e-6, seed=5)  # the nucleus is the argmax alone
    assert wb.generate(tiny, PROMPTS[:3], sampling=nucleus, max_new_tokens=16) == greedy


def _forcing(model, make_vector, token: int, position: int, layer: int = 3) -> wb.Steering:
    """Makes `token` the next token after `position`: a huge push along its (tied) embedding."""
    embedding = model.original_model.get_input_embeddings().weight[token].detach()
    return wb.Steering(make_vector(model, {layer: embedding}), layer=layer, weight=500.0, positions=(position,))


def test_stop_strings_and_eos(tiny_base, make_vector):
    """Forcing the base model to write "\\nQ:" after two free tokens, or EOS after two."""
    fmt = wb.default_format(tiny_base)
    assert default_stops(fmt) == ("\nQ:",)
    assert default_stops(PromptFormat("chat")) == () and default_stops(PromptFormat("raw")) == ()
    prompt = "Hello there"
    n = len(_ids(tiny_base, prompt))
    free = _tokens(wb.generate_table(tiny_base, [prompt], max_new_tokens=8, stop=()))[0]
    assert len(free) == 8

    stop_ids = tiny_base.tokenizer("\nQ:", add_special_tokens=False)["input_ids"]
    write_q = [_forcing(tiny_base, make_vector, t, n + 1 + i) for i, t in enumerate(stop_ids)]
    table = wb.generate_table(tiny_base, [prompt], [write_q], max_new_tokens=8)
    assert table["finish_reason"][0] == "stop"
    assert list(table["token_ids"][0]) == free[:2] + stop_ids  # stopped as soon as it appeared
    assert table["response"][0] == tiny_base.tokenizer.decode(free[:2])  # cut before the stop
    custom = wb.generate_table(tiny_base, [prompt], [write_q], max_new_tokens=8, stop=["Q"])
    assert custom["token_ids"][0] == table["token_ids"][0][:-1] and custom["finish_reason"][0] == "stop"
    ignored = wb.generate_table(tiny_base, [prompt], [write_q], max_new_tokens=8, stop=())
    assert ignored["finish_reason"][0] == "length" and "\nQ:" in ignored["response"][0]

    eos = tiny_base.tokenizer.eos_token_id
    end = [_forcing(tiny_base, make_vector, eos, n + 1)]
    table = wb.generate_table(
        tiny_base, [prompt, "A much longer prompt than the first one"], [end, []], max_new_tokens=8
    )
    assert list(table["finish_reason"]) == ["eos", "length"]
    assert list(table["token_ids"][0]) == free[:2] and table["n_tokens"][0] == 2  # EOS not included
    assert wb.generate_reference(tiny_base, prompt, end, max_new_tokens=8) == free[:2]


def test_rows_dropped_when_finished_keep_their_own_steering(tiny_base, make_vector):
    """Rows that stop early leave the batch (their KV cache rows are dropped); the rows that go
    on must keep their own steering and positions: each equals the batch-1 reference."""
    torch.manual_seed(0)
    d = tiny_base.cfg.d_model
    vec = make_vector(tiny_base, {1: torch.randn(d), 2: torch.randn(d)}, z_bars={1: 3.0, 2: -2.0})
    eos = tiny_base.tokenizer.eos_token_id
    prompts = [
        "Hello there",
        "A much longer prompt than the first one",
        "Tell me a story.",
        "What is two plus two?",
        "Name a color.",
    ]
    n = [len(_ids(tiny_base, p)) for p in prompts]
    configs = [
        [_forcing(tiny_base, make_vector, eos, n[0] + 1)],  # EOS after 2 tokens
        [_forcing(tiny_base, make_vector, eos, n[1] + 3)],  # EOS after 4 tokens
        [wb.Steering(vec, layer=1, weight=40.0)],
        [wb.Steering(vec, layer=2, mode="adjust", positions="generated")],
        [wb.Steering(vec, layer=1, weight=-30.0, positions=(-1, n[4] + 5))],
    ]
    table = wb.generate_table(tiny_base, prompts, configs, max_new_tokens=10, batch_size=5, stop=())
    assert list(table["finish_reason"]) == ["eos", "eos", "length", "length", "length"]
    assert list(table["n_tokens"]) == [2, 4, 10, 10, 10]
    for prompt, specs, got in zip(prompts, configs, _tokens(table)):
        assert got == wb.generate_reference(tiny_base, prompt, specs, max_new_tokens=10), prompt
    steered = _tokens(wb.generate_table(tiny_base, prompts[2:], configs[2:], max_new_tokens=10, stop=()))
    unsteered = _tokens(wb.generate_table(tiny_base, prompts[2:], max_new_tokens=10, stop=()))
    assert steered == _tokens(table)[2:] and steered != unsteered


def test_context_length(tiny):
    n_ctx = tiny.cfg.n_ctx
    long = "word " * 120
    assert len(_ids(tiny, long)) > n_ctx - N_TINY
    with pytest.raises(ValueError, match=r"prompt 1 has \d+ tokens.*context of 512.*truncate=True"):
        wb.generate_table(tiny, ["Hi", long], max_new_tokens=N_TINY)
    table = wb.generate_table(tiny, ["Hi", long], max_new_tokens=N_TINY, truncate=True)
    assert table["truncated_tokens"][0] == 0
    assert table["truncated_tokens"][1] == len(_ids(tiny, long)) - (n_ctx - N_TINY) > 0
    assert table["n_tokens"][1] == N_TINY
    # the start is cut: with raw text and one token per ASCII byte, that is the text's tail
    raw = PromptFormat("raw")
    text = "".join(f"{i} apples, " for i in range(60))
    cut = wb.generate_table(tiny, [text], max_new_tokens=N_TINY, fmt=raw, truncate=True)
    k = cut["truncated_tokens"][0]
    assert k == len(text) - (n_ctx - N_TINY) > 0
    tail = wb.generate_table(tiny, [text[k:]], max_new_tokens=N_TINY, fmt=raw)
    assert cut["token_ids"][0] == tail["token_ids"][0]
    exact = "a" * (n_ctx - N_TINY - len(_ids(tiny, "")))  # prompt + new tokens fill the context
    assert wb.generate_table(tiny, [exact], max_new_tokens=N_TINY)["truncated_tokens"][0] == 0


def test_bad_input(tiny, tiny_vec):
    spec = wb.Steering(tiny_vec, layer=1)
    with pytest.raises(ValueError, match="empty prompt list"):
        wb.generate(tiny, [])
    with pytest.raises(TypeError, match="not one string"):
        wb.generate(tiny, "Hi")
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        wb.generate(tiny, ["Hi"], batch_size=0)
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1"):
        wb.generate(tiny, ["Hi"], max_new_tokens=0)
    with pytest.raises(ValueError, match="per-prompt steering has 2 lists for 3 prompts"):
        wb.generate(tiny, ["a", "b", "c"], steering=[[spec], []])
    narrow = dataclasses.replace(tiny_vec, vectors=tiny_vec.vectors[:, :32])
    with pytest.raises(ValueError, match="width 32"):
        wb.generate(tiny, ["Hi"], steering=[wb.Steering(narrow, layer=1)])
    with pytest.raises(ValueError, match="width 32"):
        wb.generate_reference(tiny, "Hi", [wb.Steering(narrow, layer=1)])


# ---------------------------------------------------------------- bundled models

SHORT, LONG = "Hi", "Describe how a river shapes the valley it flows through."
N_SMOL = 16


@pytest.mark.slow
def test_batched_equals_reference_on_smollm(smollm, smollm_vec):
    """Each config once, on the prompt where it visibly changes the answer; three of the four
    rows are left-padded beside the long prompt. (The batch-1 reference recomputes the whole
    sequence per token, so every row costs seconds: one row per config.)"""
    rows = [
        ("add/all", LONG, [wb.Steering(smollm_vec, layer=15, weight=40.0)]),
        ("adjust/all", SHORT, [wb.Steering(smollm_vec, layer=15, mode="adjust")]),
        ("add/prompt", SHORT, [wb.Steering(smollm_vec, layer=10, weight=24.0, positions="prompt")]),
        ("add/generated", SHORT, [wb.Steering(smollm_vec, layer=15, weight=40.0, positions="generated")]),
    ]
    prompts = [p for _, p, _ in rows] + [SHORT, LONG]
    steering = [specs for _, _, specs in rows] + [[], []]
    got = _tokens(wb.generate_table(smollm, prompts, steering, max_new_tokens=N_SMOL, batch_size=len(prompts)))
    bridged = _tokens(
        wb.generate_table(smollm, prompts, steering, max_new_tokens=N_SMOL, batch_size=len(prompts), unbridged=False)
    )
    assert got == bridged  # the unbridged twin (default) and the bridge agree token for token
    plain = {SHORT: got[-2], LONG: got[-1]}
    for (name, prompt, specs), tokens in zip(rows, got):
        assert tokens != plain[prompt], f"{name} changed nothing, so agreement would mean little"
        ref = wb.generate_reference(smollm, prompt, specs, max_new_tokens=N_SMOL)
        assert tokens == ref, (
            f"{name} on {prompt!r}: {smollm.tokenizer.decode(tokens)!r} vs {smollm.tokenizer.decode(ref)!r}"
        )


@pytest.mark.slow
def test_unsteered_equals_hf_generate_on_smollm(smollm):
    prompt = "Give me two tips for learning to cook."
    table = wb.generate_table(smollm, [prompt], max_new_tokens=N_SMOL)
    assert list(table["token_ids"][0]) == _hf_generate(smollm, _ids(smollm, prompt), N_SMOL)
    assert table["formatted"][0].endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_unsteered_equals_hf_generate_on_gemma(gemma):
    prompt = "What is the capital of France?"
    table = wb.generate_table(gemma, [prompt], max_new_tokens=16, stop=())
    assert list(table["token_ids"][0]) == _hf_generate(gemma, _ids(gemma, prompt), 16)
    assert table["formatted"][0] == "Q: What is the capital of France?\nA:"
    # with the base model's default stop, the response never runs on into a new question
    stopped = wb.generate_table(gemma, [prompt], max_new_tokens=16)
    assert "\nQ:" not in stopped["response"][0]
    assert list(stopped["token_ids"][0]) == list(table["token_ids"][0])[: stopped["n_tokens"][0]]


def test_explicit_positions_no_row_reaches_are_refused(tiny, tiny_vec):
    """positions=(1000,) once did nothing and was recorded as applied. Indices count the prompt
    and the generated tokens; negative ones count back from the prompt's end."""
    n = len(_ids(tiny, PROMPTS[2]))  # the longest prompt
    for positions in ((1000,), (0, n + 4), (-n - 1,)):
        spec = wb.Steering(tiny_vec, layer=1, positions=positions)
        with pytest.raises(
            ValueError,
            match=rf"reach no token: the longest row has {n} prompt "
            rf"tokens and up to 4 generated ones.*Fix",
        ):
            wb.generate(tiny, PROMPTS, [spec], max_new_tokens=4, batch_size=5)
        with pytest.raises(ValueError, match="reach no token"):
            wb.generate_reference(tiny, PROMPTS[2], [spec], max_new_tokens=4)
    edge = wb.Steering(tiny_vec, layer=1, positions=(-n, n + 3))  # the first and last tokens
    assert len(wb.generate(tiny, PROMPTS, [edge], max_new_tokens=4, batch_size=5)) == len(PROMPTS)
    # per-row specs are checked against their own row: the longest prompt's index is not "Hi"'s
    short = len(_ids(tiny, "Hi"))
    with pytest.raises(ValueError, match=f"longest row has {short} prompt tokens"):
        wb.generate(tiny, ["Hi", PROMPTS[2]], [[dataclasses.replace(edge, positions=(n,))], []], max_new_tokens=4)


def test_sampling_uses_a_generator_on_the_logits_device(tiny):
    logits = torch.randn(3, 50)
    hot = wb.Sampling(temperature=1.0)
    first = hot.pick(logits, torch.Generator("cpu").manual_seed(1))
    assert torch.equal(first, hot.pick(logits, torch.Generator("cpu").manual_seed(1)))
    assert first.device == logits.device and first.shape == (3,)
    assert torch.equal(wb.Sampling().pick(logits, None), logits.argmax(-1))
    from workbench.devices import input_device

    assert input_device(tiny) == next(tiny.original_model.parameters()).device
