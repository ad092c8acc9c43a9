"""Caching the residual stream for both sides of prompt pairs, narrowly.

    acts = wb.cache_pairs(model, pairs, layers=None, hook="resid_post", position="last")
    acts.with_instruction        # Float[Tensor, "n_pairs n_layers d_model"], on CPU

Only the requested hook points are hooked, only the requested positions are kept, and each is
copied to the CPU as it is read. Prompts are left-padded and given position ids from the
attention mask, so a padded batch computes what each prompt computes alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from workbench.models import input_device, model_info
from workbench.pairs import PromptPair
from workbench.prompts import PromptFormat, default_format, encode
from workbench.runs import progress
from workbench.twin import supports, twin, twin_hooks


class _StopForward(Exception):
    """Raised after the deepest hooked layer: the rest of the forward pass is not needed."""


Position = str | int | Sequence[int]


@dataclass(frozen=True)
class PairActivations:
    """Activations of both sides of each pair at the hook point of every layer in `layers`.

    position "last"/"mean"/an int: tensors of shape (n_pairs, n_layers, d_model);
    a list of ints: (n_pairs, n_positions, n_layers, d_model);
    "all": lists of (n_tokens_i, n_layers, d_model) tensors, one per pair (ragged).
    """

    with_instruction: Tensor | list[Tensor]
    without_instruction: Tensor | list[Tensor]
    layers: list[int]
    hook: str
    position: Position
    pairs: list[PromptPair]
    prompts_with: list[str]
    prompts_without: list[str]
    positions_with: list[list[int]]  # the token indices read, per prompt (unpadded)
    positions_without: list[list[int]]
    format: PromptFormat
    provenance: dict = field(default_factory=dict)

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)


def hook_name(model, hook: str, layer: int) -> str:
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


def cache_pairs(
    model,
    pairs: Sequence[PromptPair],
    layers: Sequence[int] | None = None,
    *,
    hook: str = "resid_post",
    position: Position = "last",
    batch_size: int = 16,
    fmt: PromptFormat | None = None,
    checkpoint: str | Path | None = None,
    max_tokens: int = 4096,
    show_progress: bool | None = None,
) -> PairActivations:
    """Cache both sides of `pairs`. `checkpoint`: a directory where finished batches are saved,
    so an interrupted run resumes from them (refused if it was written for other inputs).
    Batches hold at most `batch_size` prompts and `max_tokens` padded tokens, so a few long
    prompts do not pad a whole batch to their length (on 64 of the format experiment's pairs,
    one batch of 64 computed 4.2x the real tokens; buckets of <= 4096 padded tokens, 1.3x)."""
    if not pairs:
        raise ValueError("empty pair list: nothing to cache. Fix: pass at least one PromptPair.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    layers = list(range(model.cfg.n_layers)) if layers is None else [int(l) for l in layers]
    names = [hook_name(model, hook, l) for l in layers]
    layers = [l % model.cfg.n_layers for l in layers]
    fmt = fmt or default_format(model)
    tok = model.tokenizer
    prompts_with = fmt.apply_all(tok, [p.with_instruction for p in pairs])
    prompts_without = fmt.apply_all(tok, [p.without_instruction for p in pairs])
    texts = prompts_with + prompts_without
    ids = encode(tok, texts, fmt)
    keys = [p.key for p in pairs] * 2
    read = [_positions(position, len(row), key) for row, key in zip(ids, keys)]
    store = _Checkpoint(checkpoint, model, texts, names, position, (batch_size, max_tokens)) if checkpoint else None

    # longest first, so the first batch shows the peak memory and padding stays small
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    chunks: dict[int, list[Tensor]] = {}
    batches = length_batches(order, [len(r) for r in ids], batch_size, max_tokens)
    for b, index in enumerate(progress(batches, "caching", show_progress)):
        saved = store.load(b) if store else None
        if saved is None:
            saved = _run_batch(
                model, [ids[i] for i in index], [read[i] for i in index], names, reduce_mean=position == "mean"
            )
            for i, acts in zip(index, saved):
                if not torch.isfinite(acts).all():
                    raise FloatingPointError(
                        f"non-finite activations (NaN or inf) for pair {keys[i]!r}: the model "
                        f"overflowed. Fix: use dtype=torch.float32 (finished batches are kept "
                        f"in the checkpoint directory if one was given)"
                    )
            if store:
                store.save(b, saved)
        chunks.update(zip(index, saved))
    acts = [chunks[i] for i in range(len(ids))]
    n = len(pairs)
    if position == "all":
        with_i, without_i = acts[:n], acts[n:]
    else:
        stacked = torch.stack(acts)  # (2n, k, n_layers, d)
        if isinstance(position, str) or isinstance(position, int):
            stacked = stacked[:, 0]
        with_i, without_i = stacked[:n], stacked[n:]
    info = model_info(model)
    provenance = dict(
        model=info.name,
        weight_hash=info.weight_hash,
        d_model=info.d_model,
        n_layers=info.n_layers,
        dtype=info.dtype,
        versions=info.versions,
    )
    return PairActivations(
        with_i,
        without_i,
        layers,
        hook,
        position,
        list(pairs),
        prompts_with,
        prompts_without,
        read[:n],
        read[n:],
        fmt,
        provenance,
    )


def length_batches(order: Sequence[int], lengths: Sequence[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Consecutive runs of `order` (longest first) of at most `batch_size` items whose padded
    size (items x the first, longest, length) stays within `max_tokens`; one item always fits."""
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        if (
            current
            and len(current) < batch_size
            and (len(current) + 1) * max(lengths[current[0]], lengths[i]) <= max_tokens
        ):
            current.append(i)
        else:
            batches.append([i])
    return batches


def _positions(position: Position, length: int, key: str) -> list[int]:
    if position in ("last", "mean", "all"):
        return [length - 1] if position == "last" else list(range(length))
    if isinstance(position, str):
        raise ValueError(f"unknown position {position!r}: use 'last', 'mean', 'all', an int or a list of ints")
    wanted = [position] if isinstance(position, int) else list(position)
    out = []
    for p in wanted:
        if not -length <= p < length:
            raise ValueError(
                f"position {p} is beyond the prompt of pair {key!r}, which has "
                f"{length} tokens. Fix: use an index in [-{length}, {length - 1}]"
            )
        out.append(p % length)
    return out


@torch.no_grad()
def _run_batch(model, ids: list[list[int]], read: list[list[int]], names: list[str], reduce_mean: bool) -> list[Tensor]:
    """One padded forward pass; returns per prompt a (k, n_layers, d_model) CPU tensor
    ((1, ...) for 'mean', the mean over the prompt's tokens)."""
    width = max(len(r) for r in ids)
    pad = model.tokenizer.pad_token_id or 0
    device = input_device(model)  # the embedding's device (the first of a device_map split)
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in ids], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids], device=device)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    offsets = [width - len(r) for r in ids]
    got: dict[str, list[Tensor]] = {}
    deepest = names[max(range(len(names)), key=lambda i: int(names[i].split(".")[1]))]

    def recorder(name: str):
        def record(act: Tensor, hook=None) -> None:
            _read(act, name)

        return record

    def _read(act: Tensor, name: str) -> None:
        rows = []
        for i, (o, p) in enumerate(zip(offsets, read)):
            picked = act[i, [o + j for j in p]]
            rows.append(picked.mean(0, keepdim=True) if reduce_mean else picked)
        got[name] = [r.detach().to("cpu", copy=True) for r in rows]
        if name == deepest:
            raise _StopForward

    hooks = [(n, recorder(n)) for n in dict.fromkeys(names)]
    # residual streams are read on the unbridged twin (transformers' own model on the same
    # weights, twin.py) unless the user has hooks on the bridge or asks for another hook point;
    # eager attention, as the bridge's: sdpa's masked kernel moves padded rows by ~1e-4
    tw = twin(model, attention="eager") if supports(hooks) and not model.list_hooks() else None
    with model.hooks(fwd_hooks=hooks) if tw is None else twin_hooks(tw, hooks):
        try:
            # the decoder stack alone: no lm_head, whose logits nobody reads here
            decoder = _decoder(model) if tw is None else getattr(tw, "model", tw)
            decoder(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False)
        except _StopForward:
            pass
    return [torch.stack([got[n][i] for n in names], dim=1) for i in range(len(ids))]


def _decoder(model):
    hf = model.original_model
    return getattr(hf, "model", hf)


class _Checkpoint:
    """Finished batches as safetensors files in a directory, refused if written for other inputs."""

    def __init__(self, directory, model, texts, names, position, batch_size):
        self.dir = Path(directory)
        spec = dict(
            weight_hash=model_info(model).weight_hash,
            names=names,
            position=position,
            batch_size=batch_size,
            texts=hashlib.sha256(json.dumps(texts).encode()).hexdigest(),
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.dir / "spec.json"
        if spec_file.exists() and json.loads(spec_file.read_text()) != json.loads(json.dumps(spec)):
            raise ValueError(
                f"checkpoint directory {self.dir} was written for other prompts, "
                f"layers, position or model. Fix: pass a new directory."
            )
        spec_file.write_text(json.dumps(spec))

    def load(self, b: int) -> list[Tensor] | None:
        from safetensors.torch import load_file

        path = self.dir / f"batch-{b:05d}.safetensors"
        if not path.exists():
            return None
        try:
            tensors = load_file(path)
        except Exception:  # noqa: BLE001 (a file cut short by the interruption, whatever the error: recompute it)
            return None
        return [tensors[str(i)] for i in range(len(tensors))]

    def save(self, b: int, acts: list[Tensor]) -> None:
        from safetensors.torch import save_file

        path = self.dir / f"batch-{b:05d}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file({str(i): a.contiguous() for i, a in enumerate(acts)}, tmp)
        tmp.replace(path)
