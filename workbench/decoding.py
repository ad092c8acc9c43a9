"""The decode loop: one left-padded batch, a KV cache, per-row steering hooks, greedy or sampled.

In a notebook (wb.generate_table runs it; this is its inside):

    hf = forward_module(model, rows, unbridged=None)   # the unbridged twin, or the bridge's model
    out = decode_batch(model, hf, ids, rows, 64, Sampling(), stops=(), gen=None, eos={2})

The steering hooks are told where each new token sits (hooks.PositionContext), so the tokens equal
those of the paper's batch-1 loop that recomputes the whole sequence for every token. A quarter
of the rows finished, they leave the batch (and the cache).

A sweep repeats each prompt under many settings. Rows whose prompt activations are the same (the
same tokens, and steering that leaves the prompt alone: positions="generated", weight 0, or
explicit indices past the prompt) share one prefill: it runs once per distinct prompt and its
KV-cache rows are expanded to every row that shares it (`prefill_groups`). Under greedy decoding,
rows that are the same altogether (the same tokens, the same steering once weight-0 specs, which
change nothing, are set aside) are decoded once (`same_rows`): a sweep's weight 0 at every layer is
one row per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from workbench.devices import hf_model, input_device
from workbench.hooks import PositionContext, build_hooks
from workbench.prefill import first_steered_layers, staged_prefill, touches_prompt, worth_staging
from workbench.prompts import left_pad
from workbench.steering import Steering
from workbench.twin import layers_of, reachable, twin_for, twin_hooks

if TYPE_CHECKING:
    from workbench.types import Model


@dataclass(frozen=True)
class Sampling:
    """Decoding settings, recorded in every run. temperature 0 means greedy. The sampling
    generator lives on the model's device, so a seed repeats its samples on the same device."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def pick(self, logits: Float[Tensor, "batch d_vocab"], gen: torch.Generator | None) -> Int[Tensor, " batch"]:
        if self.temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / self.temperature, -1)
        if self.top_p < 1.0:
            sorted_p, order = probs.sort(-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p > self.top_p  # keep the smallest nucleus
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        return torch.multinomial(probs, 1, generator=gen)[:, 0]


def forward_module(model: Model, per_row: list[list[Steering]], unbridged: bool | None) -> nn.Module:
    """What the decode loop calls: the unbridged twin (transformers' own model class sharing the
    bridge's weights, twin.py) when every steering hook sits on a residual stream and the bridge
    carries no hooks of the user's (those would not fire on the twin); else the bridged model.
    `unbridged`: None chooses so; False forces the bridge; True requires the twin."""
    specs = {id(s): s for specs in per_row for s in specs}.values()
    names = [f"blocks.{s.layer}.hook_{s.hook.removeprefix('hook_')}" for s in specs]
    tw = twin_for(model, names) if unbridged is not False else None
    if unbridged and tw is None:
        why = (
            "the bridge carries hooks of its own"
            if model.list_hooks()
            else "a steering hook is not on the residual stream"
            if not reachable(names)
            else "this architecture cannot be twinned"
        )
        raise ValueError(
            f"unbridged=True but generation must use the bridge: {why}. Fix: "
            f"leave unbridged=None to choose automatically"
        )
    return tw if tw is not None else hf_model(model)


def _steering_key(specs: list[Steering], n_prompt: int, *, prompt_only: bool) -> tuple[object, ...]:
    return tuple(
        (id(s.vector), s.layer, s.hook, s.mode, s.weight, s.positions)
        for s in specs
        if (touches_prompt(s, n_prompt) if prompt_only else s.weight != 0)
    )


def same_rows(ids: list[list[int]], rows: list[list[Steering]], sampling: Sampling) -> list[int]:
    """Per row, the first row that decodes to the same tokens: greedy decoding of the same
    prompt tokens under the same steering (weight-0 specs set aside). Under sampling every row
    draws its own tokens, so each row is its own."""
    if sampling.temperature > 0:
        return list(range(len(ids)))
    first: dict[tuple[object, ...], int] = {}
    return [
        first.setdefault((tuple(tokens), _steering_key(specs, len(tokens), prompt_only=False)), r)
        for r, (tokens, specs) in enumerate(zip(ids, rows))
    ]


def prefill_groups(ids: list[list[int]], rows: list[list[Steering]]) -> tuple[list[int], list[int]]:
    """Which rows can share a prefill: (the first row of each distinct (prompt tokens, prompt
    steering), and per row the index of its group among those)."""
    group: dict[tuple[object, ...], int] = {}
    firsts: list[int] = []
    share = []
    for r, (tokens, specs) in enumerate(zip(ids, rows)):
        on_prompt = _steering_key(specs, len(tokens), prompt_only=True)
        g = group.setdefault((tuple(tokens), on_prompt), len(group))
        if g == len(firsts):
            firsts.append(r)
        share.append(g)
    return firsts, share


@torch.no_grad()
def decode_batch(
    model: Model,
    hf: nn.Module,
    ids: list[list[int]],
    rows: list[list[Steering]],
    max_new_tokens: int,
    sampling: Sampling,
    stops: tuple[str, ...],
    gen: torch.Generator | None,
    eos: set[int],
) -> list[tuple[list[int], str, str]]:
    """One batch of prompt token ids decoded with a KV cache by `hf` (the bridge's transformers
    model, or its unbridged twin) under the steering `rows[i]` of each row: per row its new token
    ids (up to `eos`, without it), finish reason ("eos", "stop", "length") and text."""
    from transformers import DynamicCache

    device = input_device(model)
    input_ids, mask, position_ids, offsets = left_pad(ids, model.tokenizer.pad_token_id, device)
    width = input_ids.shape[1]
    ctx = PositionContext(offsets, torch.tensor([len(r) for r in ids], device=device), 0, new_tokens=max_new_tokens)
    tokens: list[list[int]] = [[] for _ in ids]
    reasons: list[str | None] = [None] * len(ids)
    texts = [""] * len(ids)
    cache = DynamicCache()
    live = list(range(len(ids)))  # the rows still in the batch, in batch order
    hooks = build_hooks(model, rows, ctx)
    on_bridge = hf is hf_model(model)
    reps, share = prefill_groups(ids, rows)
    # on the twin on one device, rows steered from layer s on replay the prompt's layers below s
    layers = None if on_bridge or getattr(hf, "hf_device_map", None) else layers_of(hf)
    stages = (
        [] if layers is None else first_steered_layers([ids[r] for r in reps], [rows[r] for r in reps], len(layers))
    )
    staged = layers is not None and worth_staging(stages, len({tuple(t) for t in ids}), len(layers))

    def forward(step_ids: Tensor, mask: Tensor, position_ids: Tensor, kv: DynamicCache) -> Tensor:
        out = hf(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=kv,
            use_cache=True,
            logits_to_keep=1,
        )
        logits: Tensor = out.logits[:, -1]
        return logits

    with model.hooks(fwd_hooks=hooks) if on_bridge else twin_hooks(hf, hooks):
        step_ids = input_ids
        for step in range(max_new_tokens):
            if step == 0 and (staged or len(reps) < len(ids)):  # prefill the distinct rows, then expand
                if layers is not None and staged:  # the prompt's lower layers shared (prefill.py)
                    batch = (input_ids, mask, position_ids)
                    logits, cache = staged_prefill(layers, forward, ctx, batch, ids, reps, stages)
                else:  # one prefill per distinct (prompt, prompt steering)
                    first = torch.tensor(reps, device=device)
                    ctx.rows = first  # the hooks steer each first row as its own
                    logits = forward(input_ids[first], mask[first], position_ids[first], cache)
                    ctx.rows = None
                logits = logits[torch.tensor(share, device=logits.device)]
                cache.batch_select_indices(torch.tensor(share))  # a CPU index, as below
            else:
                logits = forward(step_ids, mask, position_ids, cache)
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
