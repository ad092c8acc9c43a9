"""Batched, KV-cached generation with steering, greedy or seeded sampling.

    texts = wb.generate(model, prompts, steering=[spec], max_new_tokens=64)          # list[str]
    table = wb.generate_table(model, prompts, steering=per_row_specs)               # DataFrame

`steering` is one list of specs for every prompt, or one list per prompt (a sweep in one batch).
Prompts are left-padded, position ids come from the attention mask, and the steering hooks are
told where each new token sits, so the tokens equal those of the paper's batch-1 loop that
recomputes the whole sequence for every token (`generate_reference`).

Prompts longer than the context: an error by default; with `truncate=True` the start of the
prompt is cut so prompt + max_new_tokens fits, and the table reports how many tokens were cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import pandas as pd
import torch

from workbench.decoding import Sampling, decode_batch, forward_module, same_rows
from workbench.devices import hf_model, input_device
from workbench.hooks import PositionContext, build_hooks
from workbench.kvcheck import check_kv_cache
from workbench.prompts import PromptFormat, default_format, encode
from workbench.runs import batched, progress
from workbench.steering import Steering

if TYPE_CHECKING:
    from workbench.types import Model

# one list of specs for every prompt, or one list (or None) per prompt
SteeringArg: TypeAlias = Sequence[Steering] | Sequence[Sequence[Steering] | None] | None


@dataclass(frozen=True)
class Generation:
    prompt: str
    formatted: str
    response: str
    n_tokens: int
    finish_reason: str  # "eos", "stop", "length"
    steering: str
    truncated_tokens: int = 0
    token_ids: tuple[int, ...] = ()


def _per_row(steering: SteeringArg, n: int) -> list[list[Steering]]:
    if steering is None:
        return [[] for _ in range(n)]
    given = list(steering)
    specs = [s for s in given if isinstance(s, Steering)]
    if len(specs) == len(given):
        return [specs for _ in range(n)]
    if len(given) != n:
        raise ValueError(
            f"per-prompt steering has {len(given)} lists for {n} prompts. Fix: "
            f"one list per prompt, or a single list of specs for all"
        )
    if specs:
        raise TypeError("steering mixes specs and per-prompt lists. Fix: one list per prompt, or one list for all")
    return [[] if s is None or isinstance(s, Steering) else list(s) for s in given]


def default_stops(fmt: PromptFormat) -> tuple[str, ...]:
    """A base model prompted `Q: ...\\nA:` goes on to invent the next question: stop there."""
    return ("\nQ:",) if fmt.kind == "template" and (fmt.template or "").startswith("Q:") else ()


def generate_table(
    model: Model,
    prompts: Sequence[str],
    steering: SteeringArg = None,
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    sampling: Sampling = Sampling(),
    stop: Sequence[str] | None = None,
    fmt: PromptFormat | None = None,
    truncate: bool = False,
    unbridged: bool | None = None,
    show_progress: bool | None = None,
) -> pd.DataFrame:
    """One row per prompt: prompt, formatted, response, n_tokens, finish_reason, steering,
    truncated_tokens, token_ids (the generated ids, up to and without the EOS).

    The decode loop runs on the bridge's unbridged twin (same weights, same steering at the
    same residual streams, the speed of plain transformers) unless the bridge carries hooks of
    the user's or a spec steers another hook point; `unbridged=False` forces the bridge."""
    rows = _generate(
        model, prompts, steering, max_new_tokens, batch_size, sampling, stop, fmt, truncate, unbridged, show_progress
    )
    return pd.DataFrame([r.__dict__ for r in rows])


def generate(model: Model, prompts: Sequence[str], steering: SteeringArg = None, **kwargs: Any) -> list[str]:
    """The responses only; keyword arguments as `generate_table`."""
    responses: list[str] = generate_table(model, prompts, steering, **kwargs)["response"].tolist()
    return responses


def _generate(
    model: Model,
    prompts: Sequence[str],
    steering: SteeringArg,
    max_new_tokens: int,
    batch_size: int,
    sampling: Sampling,
    stop: Sequence[str] | None,
    fmt: PromptFormat | None,
    truncate: bool,
    unbridged: bool | None,
    show_progress: bool | None,
) -> list[Generation]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string. Fix: wrap it in [...]")
    if not prompts:
        raise ValueError("empty prompt list: nothing to generate. Fix: pass at least one prompt.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    fmt = fmt or default_format(model)
    stops = default_stops(fmt) if stop is None else tuple(stop)
    per_row = _per_row(steering, len(prompts))
    formatted = fmt.apply_all(model.tokenizer, list(prompts))
    ids = encode(model.tokenizer, formatted, fmt)
    ids, cut = _fit_context(ids, model.cfg.n_ctx, max_new_tokens, truncate)
    forward = forward_module(model, per_row, unbridged)
    check_kv_cache(model, forward)  # once per module and process: never write text from a broken cache
    # on the model's device: torch.multinomial refuses a generator on another device
    gen = torch.Generator(input_device(model)).manual_seed(sampling.seed) if sampling.temperature > 0 else None
    eos = eos_ids(model)
    # rows that would decode alike run once; similar lengths share a batch, and equal prompts
    # sit together (they share a prefill)
    source = same_rows(ids, per_row, sampling)
    order = sorted(set(source), key=lambda i: (-len(ids[i]), ids[i]))
    new: dict[int, tuple[list[int], str, str]] = {}
    for index in progress(list(batched(order, batch_size)), "generating", show_progress):
        rows = [per_row[i] for i in index]
        done = decode_batch(model, forward, [ids[i] for i in index], rows, max_new_tokens, sampling, stops, gen, eos)
        new.update(zip(index, done))
    out = []
    for i, prompt in enumerate(prompts):
        tokens, reason, text = new[source[i]]
        label = "; ".join(s.describe() for s in per_row[i]) or "none"
        out.append(Generation(prompt, formatted[i], text, len(tokens), reason, label, cut[i], tuple(tokens)))
    return out


def _fit_context(
    ids: list[list[int]], n_ctx: int, max_new_tokens: int, truncate: bool
) -> tuple[list[list[int]], list[int]]:
    """The prompts that fit the context with room for `max_new_tokens`, their starts cut when
    `truncate` (else an error), and how many tokens each lost."""
    room = n_ctx - max_new_tokens
    cut = [max(0, len(r) - room) for r in ids]
    for i, c in enumerate(cut):
        if c and not truncate:
            raise ValueError(
                f"prompt {i} has {len(ids[i])} tokens, and with max_new_tokens="
                f"{max_new_tokens} it exceeds the context of {n_ctx}. Fix: shorten "
                f"it, lower max_new_tokens, or pass truncate=True to cut its start"
            )
    return [r[c:] for r, c in zip(ids, cut)], cut


def eos_ids(model: Model) -> set[int]:
    """The tokens that end a response: the tokenizer's EOS and the generation config's."""
    ids = {model.tokenizer.eos_token_id}
    configured = getattr(hf_model(model).generation_config, "eos_token_id", None)
    ids |= set(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


@torch.no_grad()
def generate_reference(
    model: Model,
    prompt: str,
    steering: Sequence[Steering] = (),
    *,
    max_new_tokens: int = 64,
    fmt: PromptFormat | None = None,
) -> list[int]:
    """The paper's way, as an oracle: batch 1, no KV cache, the whole sequence recomputed for
    every new token with the hooks on every position. Greedy; returns the new token ids
    (stopping at EOS, which is not included)."""
    fmt = fmt or default_format(model)
    ids = encode(model.tokenizer, [fmt.apply(model.tokenizer, prompt)], fmt)[0]
    n_prompt, eos = len(ids), eos_ids(model)
    hf, device = hf_model(model), input_device(model)
    ctx = PositionContext(
        torch.zeros(1, dtype=torch.long, device=device),
        torch.tensor([n_prompt], device=device),
        0,
        new_tokens=max_new_tokens,
    )
    with model.hooks(fwd_hooks=build_hooks(model, [list(steering)], ctx)):
        for _ in range(max_new_tokens):
            logits = hf(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0, -1]
            t = int(logits.argmax())
            if t in eos:
                break
            ids.append(t)
    return ids[n_prompt:]
