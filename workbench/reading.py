"""Reading activations at hook points: one padded forward pass with recording hooks, stopped
after the deepest layer read.

In a notebook:

    names = [hook_name(model, "resid_post", layer) for layer in (3, 12)]
    acts = read_batch(model, ids, positions, names)     # per row: (k, n_layers, d_model) on the CPU

`read_batch` is what `wb.cache_pairs` and the model maps (analysis.model_map) run per batch. Rows
are left-padded with position ids from the mask (prompts.left_pad), so a padded row reads what
it reads alone; each read is copied to the CPU as soon as it is taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.devices import hf_model, input_device
from workbench.prompts import left_pad
from workbench.twin import twin_for, twin_hooks
from workbench.types import Hook, NamedHook

if TYPE_CHECKING:
    from transformer_lens.hook_points import HookPoint

    from workbench.types import Model


class _StopForward(Exception):
    """Raised after the deepest hooked layer: the rest of the forward pass is not needed."""


def hook_name(model: Model, hook: str, layer: int) -> str:
    """`resid_post` -> `blocks.{layer}.hook_resid_post`, validated against the model."""
    n_layers = model.cfg.n_layers
    if not -n_layers <= layer < n_layers:
        raise ValueError(f"layer {layer} is out of range: this model has layers 0..{n_layers - 1}")
    name = f"blocks.{layer % n_layers}.hook_{hook.removeprefix('hook_')}"
    if name not in model.hook_dict:
        known = sorted({k.split(".", 2)[2] for k in model.hook_dict if k.startswith("blocks.0.hook_")})
        raise ValueError(
            f"unknown hook point {hook!r} (no {name}). Fix: use one of {[k.removeprefix('hook_') for k in known]}"
        )
    return name


@torch.no_grad()
def read_batch(
    model: Model,
    ids: Sequence[Sequence[int]],
    positions: Sequence[Sequence[int]],
    names: Sequence[str],
    *,
    mean: bool = False,
) -> list[Float[Tensor, "k n_layers d_model"]]:
    """One padded forward pass over the token id rows `ids`: per row, the activations at the hook
    points `names` (one per layer, `hook_name`) at that row's token `positions` (indices into its
    own unpadded ids), as a (k, n_layers, d_model) CPU tensor; with `mean`, their mean over the
    positions, (1, n_layers, d_model)."""
    batch = left_pad(ids, model.tokenizer.pad_token_id, input_device(model))  # the embedding's device
    offsets = batch.offsets.tolist()
    got: dict[str, list[Tensor]] = {}
    deepest = names[max(range(len(names)), key=lambda i: int(names[i].split(".")[1]))]

    def recorder(name: str) -> Hook:
        def record(act: Float[Tensor, "batch pos d_model"], hook: HookPoint | None = None) -> None:
            rows = []
            for i, (offset, wanted) in enumerate(zip(offsets, positions, strict=True)):
                picked = act[i, [offset + j for j in wanted]]
                rows.append(picked.mean(0, keepdim=True) if mean else picked)
            got[name] = [r.detach().to("cpu", copy=True) for r in rows]
            if name == deepest:
                raise _StopForward

        return record

    hooks: list[NamedHook] = [(n, recorder(n)) for n in dict.fromkeys(names)]
    # residual streams are read on the unbridged twin (transformers' own model on the same
    # weights, twin.py) unless the user has hooks on the bridge or asks for another hook point;
    # eager attention, as the bridge's: sdpa's masked kernel moves padded rows by ~1e-4
    tw = twin_for(model, [name for name, _ in hooks], attention="eager")
    with model.hooks(fwd_hooks=hooks) if tw is None else twin_hooks(tw, hooks):
        # the decoder stack alone: no lm_head, whose logits nobody reads here
        hf = hf_model(model) if tw is None else tw
        decoder = getattr(hf, "model", hf)
        try:
            decoder(
                input_ids=batch.input_ids, attention_mask=batch.mask, position_ids=batch.position_ids, use_cache=False
            )
        except _StopForward:
            pass
    return [torch.stack([got[n][i] for n in names], dim=1) for i in range(len(ids))]
