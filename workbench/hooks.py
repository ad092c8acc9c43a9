"""Steering hooks: a factory that batches specs over rows, and a context manager that always
cleans up.

In a notebook:

    with wb.steer(model, wb.Steering(vec, layer=12, mode="adjust")):   # several specs compose
        logits = model(tokens)
    with wb.steer(model, rows=[[spec_a], [spec_b, spec_c]]):          # a spec list per batch row
        ...

The hook computes in the activation's dtype on the activation's device; vectors stay float32 on
the CPU and are cast on first use (once per device and dtype). Hooks return new tensors; the
model is never changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench.reading import hook_name
from workbench.steering import Steering
from workbench.types import Hook, NamedHook

if TYPE_CHECKING:
    from transformer_lens.hook_points import HookPoint

    from workbench.types import Model


def check_positions(positions: str | tuple[int, ...], prompt_lens: Sequence[int], new_tokens: int = 0) -> None:
    """Refuse explicit indices that no row has: rows of prompts of `prompt_lens` tokens, each
    followed by up to `new_tokens` generated ones."""
    if isinstance(positions, str) or not len(prompt_lens):
        return
    longest = max(int(n) for n in prompt_lens)
    end = longest + new_tokens
    bad = [i for i in positions if not -longest <= i < end]
    if bad:
        seen = f"{longest} prompt tokens" + (f" and up to {new_tokens} generated ones" if new_tokens else "")
        raise ValueError(
            f"steering positions {bad} reach no token: the longest row has {seen} "
            f"(indices count tokens of the unpadded sequence from 0; negative ones count back "
            f"from the prompt's end, -1 its last token). Fix: give indices from {-longest} to "
            f"{end - 1}, e.g. -1 for the last prompt token"
        )


@dataclass
class PositionContext:
    """Where the tokens a hook sees sit in each row: generation updates `start` every step.

    offsets: left-padding length per row; prompt_lens: unpadded prompt length per row;
    start: padded index of the first position in the current forward pass (0 for the prompt,
    then the sequence length so far, since with a KV cache a hook sees only the new token).
    rows: which of the original rows are still in the batch (generation drops finished rows);
    None: all of them. new_tokens: how many tokens generation adds (0 outside generation), to
    refuse explicit positions no row reaches. paused: the hooks leave every activation alone (an
    unsteered pass inside a steered block, prefill.py). The tensors may live on any device.
    """

    offsets: Int[Tensor, " batch"] | None = None
    prompt_lens: Int[Tensor, " batch"] | None = None
    start: int = 0
    rows: Int[Tensor, " live"] | None = None
    new_tokens: int = 0
    paused: bool = False

    def unpadded(
        self, batch: int, length: int, device: torch.device
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
        """The unpadded index of every position a hook sees, and each row's prompt length."""
        if self.offsets is None or self.prompt_lens is None:  # a plain forward: all prompt, no padding
            pos = torch.arange(length, device=device).expand(batch, length)
            return pos, torch.full((batch,), length, device=device)
        offsets, lens = self.offsets.to(device), self.prompt_lens.to(device)  # no-ops when there
        if self.rows is not None:
            rows = self.rows.to(device)
            offsets, lens = offsets[rows], lens[rows]
        pos = self.start + torch.arange(length, device=device)[None, :] - offsets[:, None]
        return pos, lens


# a term's (d, a, b, position indices) cast to one device and dtype
_OnDevice = tuple[Tensor, Tensor, Tensor, Tensor | None]


@dataclass
class _Term:
    """One spec slot batched over rows; rows without it have a = b = 0 and d = 0."""

    positions: str | tuple[int, ...]
    d: Float[Tensor, "rows d_model"]  # float32 on the CPU
    a: Float[Tensor, " rows"]
    b: Float[Tensor, " rows"]
    needs_projection: bool = field(init=False)
    _cast: dict[tuple[torch.device, torch.dtype], _OnDevice] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.needs_projection = bool((self.b != 0).any())

    def on(self, device: torch.device, dtype: torch.dtype) -> _OnDevice:
        """(d, a, b, indices) on `device` in `dtype`: copied once, not at every decode step."""
        key = (torch.device(device), dtype)
        if key not in self._cast:
            idx = None if isinstance(self.positions, str) else torch.tensor(self.positions, device=device)
            self._cast[key] = (self.d.to(device, dtype), self.a.to(device, dtype), self.b.to(device, dtype), idx)
        return self._cast[key]

    def mask(
        self, pos: Int[Tensor, "batch pos"], prompt_lens: Int[Tensor, " batch"], idx: Int[Tensor, " k"] | None = None
    ) -> Bool[Tensor, "batch pos"]:
        real = pos >= 0
        if self.positions == "all":
            return real
        if self.positions == "prompt":
            return real & (pos < prompt_lens[:, None])
        if self.positions == "generated":
            return pos >= prompt_lens[:, None]
        idx = torch.tensor(self.positions, device=pos.device) if idx is None else idx
        idx = torch.where(idx < 0, prompt_lens[:, None] + idx[None, :], idx[None, :])  # (rows, k)
        return real & (pos[:, :, None] == idx[:, None, :]).any(-1)


def _steering_hook(terms: list[_Term], ctx: PositionContext) -> Hook:
    def hook(
        x: Float[Tensor, "batch pos d_model"], hook: HookPoint | None = None
    ) -> Float[Tensor, "batch pos d_model"]:
        if ctx.paused:
            return x
        pos, prompt_lens = ctx.unpadded(x.shape[0], x.shape[1], x.device)
        rows = None if ctx.rows is None else ctx.rows.to(x.device)
        for t in terms:
            if ctx.offsets is None:  # a plain forward: the tokens passed are the prompt
                check_positions(t.positions, [x.shape[1]])
            d, a, b, idx = t.on(x.device, x.dtype)
            if rows is not None and len(a) > 1:
                d, a, b = d[rows], a[rows], b[rows]
            coef = a[:, None]
            if t.needs_projection:
                coef = coef + b[:, None] * torch.einsum("btd,bd->bt", x, d)
            coef = coef * t.mask(pos, prompt_lens, idx)
            x = x + coef[..., None] * d[:, None, :]
        return x

    return hook


def check_specs(model: Model, specs: Sequence[Steering]) -> None:
    """Refuse what is not a Steering spec, a vector of another model or width, an unknown hook."""
    for spec in specs:
        if not isinstance(spec, Steering):
            raise TypeError(f"expected wb.Steering specs, got {type(spec).__name__}")
        spec.vector.check_model(model, allow_cross_model=spec.allow_cross_model)
        hook_name(model, spec.hook, spec.layer)


def build_hooks(model: Model, rows: Sequence[Sequence[Steering]], ctx: PositionContext) -> list[NamedHook]:
    """Hooks applying `rows[i]` to batch row i (one row broadcasts to any batch)."""
    # a sweep repeats the same few specs over hundreds of rows: check and resolve each once
    names: dict[int, str] = {}
    lens = None if ctx.prompt_lens is None else [int(n) for n in ctx.prompt_lens.tolist()]
    reach: dict[int, tuple[Steering, list[int]]] = {}  # the prompt lengths of the rows it steers
    for r, specs in enumerate(rows):
        for spec in specs:
            if id(spec) not in names:
                check_specs(model, [spec])
                names[id(spec)] = hook_name(model, spec.hook, spec.layer)
            if lens is not None and not isinstance(spec.positions, str):
                # one row for the whole batch steers every prompt
                reach.setdefault(id(spec), (spec, []))[1].extend(lens if len(rows) == 1 else [lens[r]])
    for spec, steered in reach.values():
        check_positions(spec.positions, steered, ctx.new_tokens)
    slots: dict[tuple[str, int], list[tuple[int, Steering]]] = {}
    for r, specs in enumerate(rows):
        seen: dict[str, int] = {}
        for spec in specs:
            name = names[id(spec)]
            k = seen[name] = seen.get(name, -1) + 1  # the k-th spec of this row at this hook
            slots.setdefault((name, k), []).append((r, spec))
    by_hook: dict[str, list[_Term]] = {}
    d_model = model.cfg.d_model
    for (name, _), members in slots.items():
        for positions in dict.fromkeys(s.positions for _, s in members):
            d = torch.zeros(len(rows), d_model)
            a, b = torch.zeros(len(rows)), torch.zeros(len(rows))
            for r, spec in members:
                if spec.positions == positions:
                    d[r], a[r], b[r] = spec.coefficients()
            by_hook.setdefault(name, []).append(_Term(positions, d, a, b))
    return [(name, _steering_hook(terms, ctx)) for name, terms in by_hook.items()]


@contextmanager
def steer(
    model: Model,
    *specs: Steering,
    rows: Sequence[Sequence[Steering]] | None = None,
    context: PositionContext | None = None,
) -> Iterator[Model]:
    """Apply `specs` to every row (or `rows[i]` to row i) while the block runs.

    The hooks are added through TransformerBridge's own `model.hooks`, which removes exactly the
    hooks it added on exit, also when the body raises; hooks the user added stay. Nesting works.
    """
    if rows is None:
        rows = [list(specs)]
    elif specs:
        raise ValueError("pass specs for every row or per-row `rows`, not both")
    hooks = build_hooks(model, rows, context or PositionContext())
    with model.hooks(fwd_hooks=hooks):
        yield model
