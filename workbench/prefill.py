"""A sweep's prefill that shares the prompt's lower layers: a row steered on its prompt from layer
s on has, below s, the unsteered prompt's activations and KV cache.

The decode loop (decoding.py) already prefills once per distinct (prompt, steering of the prompt).
A paper-style sweep steers every position, so each of its rows changes the prompt and needs a
prefill of its own; yet a row steered at layer 18 of 30 computes layers 0-17 exactly as the
unsteered prompt does. Here the unsteered prompts run once through every layer (their outputs and
KV kept), and each group of rows with the same first steered layer s runs only layers s.. with
layers 0..s-1 replayed from the unsteered run (`_Replay`: it writes the kept KV rows into the
group's cache and returns the kept output). The caches are then merged row by row.

    stages = first_steered_layers([ids[r] for r in reps], [rows[r] for r in reps], n_layers)
    if worth_staging(stages, n_distinct_prompts, n_layers):
        logits, cache = staged_prefill(layers, forward, ctx, (input_ids, mask, position_ids), ids, reps, stages)

Only on the unbridged twin on one device (decoding.decode_batch decides): the bridge's hook points
and accelerate's per-layer device hooks sit on the layer modules this swaps out for a moment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from workbench.hooks import PositionContext
from workbench.steering import Steering

if TYPE_CHECKING:
    from transformers import DynamicCache

# one forward of the twin: (input ids, attention mask, position ids, cache) -> last-position logits
Forward = Callable[[Tensor, Tensor, Tensor, "DynamicCache"], Tensor]


def touches_prompt(spec: Steering, n_prompt: int) -> bool:
    """Whether `spec` changes any activation of a prompt of `n_prompt` tokens (its hook's rows
    x + (a + b x.d) d are exactly x at every position it does not steer, and everywhere at
    weight 0)."""
    if spec.weight == 0 or spec.positions == "generated":
        return False
    if isinstance(spec.positions, tuple):
        return any(-n_prompt <= i < n_prompt for i in spec.positions)
    return True  # "all", "prompt"


def first_steered_layers(ids: list[list[int]], rows: list[list[Steering]], n_layers: int) -> list[int]:
    """Per row, the first decoder layer whose computation on the prompt its steering changes: a
    spec at blocks.{l}.hook_resid_post changes layer l's output, one at hook_resid_pre its input,
    so layers below l are the unsteered prompt's either way. n_layers: the prompt is untouched."""
    return [
        min((s.layer for s in specs if touches_prompt(s, len(tokens))), default=n_layers)
        for tokens, specs in zip(ids, rows)
    ]


def worth_staging(stages: list[int], n_prompts: int, n_layers: int) -> bool:
    """Whether replaying the lower layers saves work: layer passes of the staged prefill (every
    distinct prompt through all layers, each row through the layers from its stage on) against
    the plain one (every row through all layers), by a margin that pays for the extra calls."""
    staged = n_prompts * n_layers + sum(n_layers - s for s in stages if s < n_layers)
    return staged < 0.8 * len(stages) * n_layers


class _Replay(nn.Module):
    """Stands in for decoder layer `index` of the rows of one stage: writes the unsteered
    prompt's KV rows into the cache it is given and returns the unsteered layer output."""

    def __init__(self, index: int, original: nn.Module, output: Tensor, keys: Tensor, values: Tensor) -> None:
        super().__init__()
        self.index, self.output, self.keys, self.values = index, output, keys, values
        if hasattr(original, "attention_type"):  # some model classes read it off the layer
            self.attention_type = original.attention_type

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        cache = kwargs.get("past_key_values", kwargs.get("past_key_value"))
        if cache is None:
            raise RuntimeError("the staged prefill's replayed layer was called without a KV cache")
        cache.update(self.keys, self.values, self.index)
        return self.output


@torch.no_grad()
def staged_prefill(
    layers: nn.ModuleList,
    forward: Forward,
    ctx: PositionContext,
    batch: tuple[Tensor, Tensor, Tensor],
    ids: list[list[int]],
    members: list[int],
    stages: list[int],
) -> tuple[Tensor, DynamicCache]:
    """The last-position logits and the KV cache of the batch rows `members` (of a left-padded
    prompt batch: input ids, attention mask, position ids; `ids` its unpadded token lists), as one
    prefill of those rows would give them, with the layers below each member's stage (`stages`,
    one per member) replayed from the unsteered prompts. `forward` runs the twin under the
    steering hooks, which read `ctx`."""
    from transformers import DynamicCache

    input_ids, mask, position_ids = batch
    n_layers = len(layers)
    first_of: dict[tuple[int, ...], int] = {}  # prompt tokens -> the first member with them
    for r in members:
        first_of.setdefault(tuple(ids[r]), r)
    prompt_index = {tokens: p for p, tokens in enumerate(first_of)}
    which = [prompt_index[tuple(ids[r])] for r in members]
    firsts = torch.tensor(list(first_of.values()))

    # 1. each distinct prompt once, unsteered, every layer's output kept
    base = DynamicCache()
    outputs: list[Tensor] = []
    keep = [layer.register_forward_hook(lambda _m, _a, out: outputs.append(_first(out))) for layer in layers]
    ctx.paused = True
    try:
        base_logits = forward(input_ids[firsts], mask[firsts], position_ids[firsts], base)
    finally:
        ctx.paused = False
        for h in keep:
            h.remove()
    kept_kv = [_kv(base, i) for i in range(n_layers)]

    # 2. per stage, its members through the layers from the stage on, the layers below replayed
    order: list[int] = []
    logits_parts: list[Tensor] = []
    kv_parts: list[list[tuple[Tensor, Tensor]]] = []
    for stage in sorted(set(stages)):
        group = [j for j, s in enumerate(stages) if s == stage]
        prompts = torch.tensor([which[j] for j in group])
        order += group
        if stage == n_layers:  # the prompt untouched: the unsteered run is the member's
            logits_parts.append(base_logits[prompts])
            kv_parts.append([(k[prompts], v[prompts]) for k, v in kept_kv])
            continue
        cache = DynamicCache()
        rows = torch.tensor([members[j] for j in group])
        originals = [layers[i] for i in range(stage)]
        for i in range(stage):
            k, v = kept_kv[i]
            layers[i] = _Replay(i, originals[i], outputs[i][prompts], k[prompts], v[prompts])
        ctx.rows = rows  # the hooks steer each member as its own batch row
        try:
            logits_parts.append(forward(input_ids[rows], mask[rows], position_ids[rows], cache))
        finally:
            ctx.rows = None
            for i, original in enumerate(originals):
                layers[i] = original
        kv_parts.append([_kv(cache, i) for i in range(n_layers)])

    # 3. back in the members' order
    back = torch.argsort(torch.tensor(order))
    merged = DynamicCache()
    for i in range(n_layers):
        keys = torch.cat([part[i][0] for part in kv_parts])
        values = torch.cat([part[i][1] for part in kv_parts])
        merged.update(keys[back.to(keys.device)], values[back.to(values.device)], i)
    logits = torch.cat(logits_parts)
    return logits[back.to(logits.device)], merged


def _kv(cache: DynamicCache, layer: int) -> tuple[Tensor, Tensor]:
    """Layer `layer`'s keys and values in `cache`."""
    keys, values = getattr(cache.layers[layer], "keys", None), getattr(cache.layers[layer], "values", None)
    if not isinstance(keys, Tensor) or not isinstance(values, Tensor):
        raise TypeError(
            f"cache layer {layer} holds no key and value tensors: a cache type the staged prefill cannot merge"
        )
    return keys, values


def _first(out: Tensor | tuple[Tensor, ...]) -> Tensor:
    return out[0] if isinstance(out, tuple) else out
