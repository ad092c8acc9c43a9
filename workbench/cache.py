"""Caching the residual stream for both sides of prompt pairs, narrowly.

In a notebook:

    acts = wb.cache_pairs(model, pairs, layers=None, hook="resid_post", position="last")
    acts.with_instruction        # Float[Tensor, "n_pairs n_layers d_model"], on the CPU
    every = wb.cache_pairs_all_positions(model, pairs, layers=[12])
    every.with_instruction[i]    # Float[Tensor, "pos n_layers d_model"]: prompt i's own length

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
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.models import model_info
from workbench.pairs import PromptPair
from workbench.prompts import PromptFormat, default_format, encode
from workbench.reading import hook_name, read_batch
from workbench.runs import progress

if TYPE_CHECKING:
    from workbench.types import Model

# which tokens of each prompt cache_pairs reads: "last", "mean" (over the prompt's tokens), one
# token index (negative ones count from the end), or several (a list of indices)
Position = str | int | Sequence[int]


@dataclass(frozen=True, kw_only=True)
class CachedPairs:
    """What was cached and how: the pairs and their formatted prompts, the layers and hook point,
    the token indices read per prompt (unpadded), the prompt format and the model's provenance.
    The activations themselves are in PairActivations and AllPositionActivations."""

    layers: list[int]
    hook: str
    position: Position
    pairs: list[PromptPair]
    prompts_with: list[str]
    prompts_without: list[str]
    positions_with: list[list[int]]  # the token indices read, per prompt (unpadded)
    positions_without: list[list[int]]
    format: PromptFormat
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)


@dataclass(frozen=True)
class PairActivations(CachedPairs):
    """Activations of both sides of each pair at the hook point of every layer in `layers`:
    (n_pairs, n_layers, d_model) for position "last", "mean" or one index; (n_pairs, n_positions,
    n_layers, d_model) for a list of indices."""

    with_instruction: Float[Tensor, "n_pairs *positions n_layers d_model"]
    without_instruction: Float[Tensor, "n_pairs *positions n_layers d_model"]


@dataclass(frozen=True)
class AllPositionActivations(CachedPairs):
    """Activations at every token of both sides of each pair: one (n_tokens, n_layers, d_model)
    tensor per prompt, each of its own length (`position` is "all")."""

    with_instruction: list[Float[Tensor, "pos n_layers d_model"]]
    without_instruction: list[Float[Tensor, "pos n_layers d_model"]]


def cache_pairs(
    model: Model,
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
    """Cache both sides of `pairs` at `position` (see Position; every token of prompts of
    different lengths is `cache_pairs_all_positions`). `checkpoint`: a directory where finished
    batches are saved, so an interrupted run resumes from them (refused if it was written for
    other inputs). Batches hold at most `batch_size` prompts and `max_tokens` padded tokens, so a
    few long prompts do not pad a whole batch to their length (on 64 of the format experiment's
    pairs, one batch of 64 computed 4.2x the real tokens; buckets of <= 4096 padded tokens, 1.3x)."""
    if position == "all":
        raise ValueError(
            "position='all' gives one tensor per prompt, each of its own length. Fix: "
            "wb.cache_pairs_all_positions(model, pairs, ...), which returns them as lists"
        )
    record, acts = _cache(model, pairs, layers, hook, position, batch_size, fmt, checkpoint, max_tokens, show_progress)
    stacked = torch.stack(acts)  # (2 n_pairs, k, n_layers, d_model)
    if isinstance(position, str | int):  # one position (or the mean): no positions axis
        stacked = stacked[:, 0]
    n = len(pairs)
    return PairActivations(stacked[:n], stacked[n:], **record)


def cache_pairs_all_positions(
    model: Model,
    pairs: Sequence[PromptPair],
    layers: Sequence[int] | None = None,
    *,
    hook: str = "resid_post",
    batch_size: int = 16,
    fmt: PromptFormat | None = None,
    checkpoint: str | Path | None = None,
    max_tokens: int = 4096,
    show_progress: bool | None = None,
) -> AllPositionActivations:
    """Cache every token of both sides of `pairs`: one (n_tokens, n_layers, d_model) tensor per
    prompt. The arguments are cache_pairs'."""
    record, acts = _cache(model, pairs, layers, hook, "all", batch_size, fmt, checkpoint, max_tokens, show_progress)
    n = len(pairs)
    return AllPositionActivations(acts[:n], acts[n:], **record)


def _cache(
    model: Model,
    pairs: Sequence[PromptPair],
    layers: Sequence[int] | None,
    hook: str,
    position: Position,
    batch_size: int,
    fmt: PromptFormat | None,
    checkpoint: str | Path | None,
    max_tokens: int,
    show_progress: bool | None,
) -> tuple[dict[str, Any], list[Float[Tensor, "k n_layers d_model"]]]:
    """The CachedPairs fields and, per prompt (the with-instruction sides first, then the
    without), its (k, n_layers, d_model) activations at the positions read."""
    if not pairs:
        raise ValueError("empty pair list: nothing to cache. Fix: pass at least one PromptPair.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    asked = list(range(model.cfg.n_layers)) if layers is None else [int(layer) for layer in layers]
    names = [hook_name(model, hook, layer) for layer in asked]
    fmt = fmt or default_format(model)
    tok = model.tokenizer
    prompts_with = fmt.apply_all(tok, [p.with_instruction for p in pairs])
    prompts_without = fmt.apply_all(tok, [p.without_instruction for p in pairs])
    texts = prompts_with + prompts_without
    ids = encode(tok, texts, fmt)
    keys = [p.key for p in pairs] * 2
    read = [_positions(position, len(row), key) for row, key in zip(ids, keys, strict=True)]
    store = _Checkpoint(checkpoint, model, texts, names, position, (batch_size, max_tokens)) if checkpoint else None

    # longest first, so the first batch shows the peak memory and padding stays small
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    chunks: dict[int, Tensor] = {}
    batches = length_batches(order, [len(r) for r in ids], batch_size, max_tokens)
    for b, index in enumerate(progress(batches, "caching", show_progress)):
        saved = store.load(b) if store else None
        if saved is None:
            saved = read_batch(model, [ids[i] for i in index], [read[i] for i in index], names, mean=position == "mean")
            for i, acts in zip(index, saved, strict=True):
                if not torch.isfinite(acts).all():
                    raise FloatingPointError(
                        f"non-finite activations (NaN or inf) for pair {keys[i]!r}: the model "
                        f"overflowed. Fix: use dtype=torch.float32 (finished batches are kept "
                        f"in the checkpoint directory if one was given)"
                    )
            if store:
                store.save(b, saved)
        chunks.update(zip(index, saved, strict=True))
    n, info = len(pairs), model_info(model)
    record = dict(
        layers=[layer % model.cfg.n_layers for layer in asked],
        hook=hook,
        position=position,
        pairs=list(pairs),
        prompts_with=prompts_with,
        prompts_without=prompts_without,
        positions_with=read[:n],
        positions_without=read[n:],
        format=fmt,
        provenance=dict(
            model=info.name,
            weight_hash=info.weight_hash,
            d_model=info.d_model,
            n_layers=info.n_layers,
            dtype=info.dtype,
            versions=info.versions,
        ),
    )
    return record, [chunks[i] for i in range(len(ids))]


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
    """The token indices of a prompt of `length` tokens that `position` reads ("all": every one)."""
    if position in ("last", "mean", "all"):
        return [length - 1] if position == "last" else list(range(length))
    if isinstance(position, str):
        raise ValueError(f"unknown position {position!r}: use 'last', 'mean', an int or a list of ints")
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


class _Checkpoint:
    """Finished batches as safetensors files in a directory, refused if written for other inputs."""

    def __init__(
        self,
        directory: str | Path,
        model: Model,
        texts: Sequence[str],
        names: Sequence[str],
        position: Position,
        batch_size: tuple[int, int],
    ) -> None:
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
