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

import pandas as pd
import torch

from workbench.kvcheck import check_kv_cache
from workbench.prompts import PromptFormat, default_format, encode
from workbench.runs import batched, progress
from workbench.steering import PositionContext, Steering, build_hooks
from workbench.twin import twin, twin_hooks


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


@dataclass(frozen=True)
class Sampling:
    """Decoding settings, recorded in every run. temperature 0 means greedy. The sampling
    generator lives on the model's device, so a seed repeats its samples on the same device."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def pick(self, logits: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        if self.temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / self.temperature, -1)
        if self.top_p < 1.0:
            sorted_p, order = probs.sort(-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p > self.top_p  # keep the smallest nucleus
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        return torch.multinomial(probs, 1, generator=gen)[:, 0]


def _per_row(steering, n: int) -> list[list[Steering]]:
    if steering is None:
        return [[] for _ in range(n)]
    steering = list(steering)
    if all(isinstance(s, Steering) for s in steering):
        return [steering for _ in range(n)]
    if len(steering) != n:
        raise ValueError(
            f"per-prompt steering has {len(steering)} lists for {n} prompts. Fix: "
            f"one list per prompt, or a single list of specs for all"
        )
    return [list(s or []) for s in steering]


def default_stops(fmt: PromptFormat) -> tuple[str, ...]:
    """A base model prompted `Q: ...\\nA:` goes on to invent the next question: stop there."""
    return ("\nQ:",) if fmt.kind == "template" and fmt.template.startswith("Q:") else ()


def generate_table(
    model,
    prompts: Sequence[str],
    steering=None,
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


def generate(model, prompts: Sequence[str], steering=None, **kwargs) -> list[str]:
    """The responses only; keyword arguments as `generate_table`."""
    return generate_table(model, prompts, steering, **kwargs)["response"].tolist()


def _generate(
    model, prompts, steering, max_new_tokens, batch_size, sampling, stop, fmt, truncate, unbridged, show_progress
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
    stop = default_stops(fmt) if stop is None else tuple(stop)
    per_row = _per_row(steering, len(prompts))
    formatted = fmt.apply_all(model.tokenizer, list(prompts))
    ids = encode(model.tokenizer, formatted, fmt)
    ids, cut = _fit_context(ids, model.cfg.n_ctx, max_new_tokens, truncate)
    forward = _forward_module(model, per_row, unbridged)
    check_kv_cache(model, forward)  # once per module and process: never write text from a broken cache
    # on the model's device: torch.multinomial refuses a generator on another device
    gen = torch.Generator(_device(model)).manual_seed(sampling.seed) if sampling.temperature > 0 else None
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths share a batch
    out: dict[int, Generation] = {}
    for index in progress(list(batched(order, batch_size)), "generating", show_progress):
        new = _generate_batch(
            model, forward, [ids[i] for i in index], [per_row[i] for i in index], max_new_tokens, sampling, stop, gen
        )
        for i, (tokens, reason, text) in zip(index, new):
            out[i] = Generation(
                prompts[i],
                formatted[i],
                text,
                len(tokens),
                reason,
                "; ".join(s.describe() for s in per_row[i]) or "none",
                cut[i],
                tuple(tokens),
            )
    return [out[i] for i in range(len(prompts))]


def _fit_context(ids, n_ctx, max_new_tokens, truncate):
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


def _forward_module(model, per_row, unbridged: bool | None):
    """What the decode loop calls: the unbridged twin (transformers' own model class sharing the
    bridge's weights, twin.py) when every steering hook sits on a residual stream and the bridge
    carries no hooks of the user's (those would not fire on the twin); else the bridged model.
    `unbridged`: None chooses so; False forces the bridge; True requires the twin."""
    specs = {id(s): s for specs in per_row for s in specs}.values()
    reachable = all(s.hook.removeprefix("hook_") in ("resid_post", "resid_pre") for s in specs)
    user_hooks = bool(model.list_hooks())
    tw = twin(model) if unbridged is not False and reachable and not user_hooks else None
    if unbridged and tw is None:
        why = (
            "the bridge carries hooks of its own"
            if user_hooks
            else "a steering hook is not on the residual stream"
            if not reachable
            else "this architecture cannot be twinned"
        )
        raise ValueError(
            f"unbridged=True but generation must use the bridge: {why}. Fix: "
            f"leave unbridged=None to choose automatically"
        )
    return tw if tw is not None else model.original_model


def _device(model) -> torch.device:
    """Where the input ids go: the embedding's device (the first GPU of a device_map split)."""
    from workbench.models import input_device

    return input_device(model)


def eos_ids(model) -> set[int]:
    ids = {model.tokenizer.eos_token_id}
    configured = getattr(model.original_model.generation_config, "eos_token_id", None)
    ids |= set(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


@torch.no_grad()
def _generate_batch(model, hf, ids, rows, max_new_tokens, sampling, stop, gen):
    from transformers import DynamicCache

    device = _device(model)
    width = max(len(r) for r in ids)
    pad = model.tokenizer.pad_token_id or 0
    offsets = torch.tensor([width - len(r) for r in ids], device=device)
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in ids], device=device)
    mask = (torch.arange(width, device=device)[None, :] >= offsets[:, None]).long()
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    ctx = PositionContext(offsets, torch.tensor([len(r) for r in ids], device=device), 0, new_tokens=max_new_tokens)
    stops, eos = stop, eos_ids(model)
    tokens = [[] for _ in ids]
    reasons: list[str | None] = [None] * len(ids)
    texts = [""] * len(ids)
    cache = DynamicCache()
    live = list(range(len(ids)))  # the rows still in the batch, in batch order
    hooks = build_hooks(model, rows, ctx)
    on_bridge = hf is model.original_model
    with model.hooks(fwd_hooks=hooks) if on_bridge else twin_hooks(hf, hooks):
        step_ids = input_ids
        for step in range(max_new_tokens):
            logits = hf(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1]
            nxt = sampling.pick(logits, gen)
            for r, t in zip(live, nxt.tolist()):
                if reasons[r] is not None:
                    continue
                if t in eos:
                    reasons[r] = "eos"
                    continue
                tokens[r].append(t)
                if stops:
                    texts[r] = model.tokenizer.decode(tokens[r], skip_special_tokens=True)
                    if any(s in texts[r] for s in stops):
                        reasons[r] = "stop"
            if all(reasons):
                break
            keep = [i for i, r in enumerate(live) if reasons[r] is None]
            if 4 * (len(live) - len(keep)) >= len(live):  # a quarter finished: drop them
                index = torch.tensor(keep, device=device)
                # a CPU index: under a device_map split each layer's cache sits on its own
                # device, and CUDA tensors accept CPU indices, not another GPU's
                cache.batch_select_indices(torch.tensor(keep))
                mask, position_ids, nxt = mask[index], position_ids[index], nxt[index]
                live = [live[i] for i in keep]
                ctx.rows = torch.tensor(live, device=device)
            # the next forward sees one new token per row, at padded index width + step
            ctx.start = width + step
            step_ids = nxt[:, None].to(device)
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
            position_ids = position_ids[:, -1:] + 1
    out = []
    for r in range(len(ids)):
        text = model.tokenizer.decode(tokens[r], skip_special_tokens=True)
        for s in stops:
            text = text.split(s)[0] if s in text else text
        out.append((tokens[r], reasons[r] or "length", text))
    return out


@torch.no_grad()
def generate_reference(
    model, prompt: str, steering: Sequence[Steering] = (), *, max_new_tokens: int = 64, fmt: PromptFormat | None = None
) -> list[int]:
    """The paper's way, as an oracle: batch 1, no KV cache, the whole sequence recomputed for
    every new token with the hooks on every position. Greedy; returns the new token ids
    (stopping at EOS, which is not included)."""
    fmt = fmt or default_format(model)
    ids = encode(model.tokenizer, [fmt.apply(model.tokenizer, prompt)], fmt)[0]
    n_prompt, eos = len(ids), eos_ids(model)
    hf, device = model.original_model, _device(model)
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
