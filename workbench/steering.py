"""Steering interventions: frozen specs, hook factories, and a context manager that always cleans up.

    spec = wb.Steering(vec, layer=12, mode="adjust", weight=1.0, positions="all")
    with wb.steer(model, spec):           # several specs at several layers compose
        logits = model(tokens)

Modes, for activation x at the spec's layer, u = vec.direction(layer), w = weight:
    add     x + w * v            v = vec.vector(layer) (u times the vector's own scale, so
                                 add(2 * vec, 1) == add(vec, 2))
    adjust  x + w * (z - x.u) u  z = vec.z_bar(layer); w = 1 sets every position's projection on
                                 u to z (the paper's format setting), w = 0 changes nothing, and
                                 values between move the projection that fraction of the way
    ablate  x - w * (x.u) u      w = 1 removes the component along u
All three are x + (a + b * x.u) * d for a direction d and scalars a, b, which is how the hook
computes them, batched over rows that may each carry a different configuration.

Positions count tokens of the unpadded prompt from 0: "all" (prompt and generated: the paper's
semantics), "prompt", "generated", or explicit indices (negative ones count back from the prompt's
end, so -1 is the last prompt token). Outside wb.generate every token passed counts as prompt.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import Tensor

from workbench.cache import hook_name
from workbench.vectors import SteeringVector

MODES = ("add", "adjust", "ablate")
NAMED_POSITIONS = ("all", "prompt", "generated")


@dataclass(frozen=True)
class Steering:
    """One intervention: a vector applied at one layer, in one mode, at some positions."""

    vector: SteeringVector
    layer: int
    mode: str = "add"
    weight: float = 1.0
    positions: str | tuple[int, ...] = "all"
    hook: str = "resid_post"
    allow_cross_model: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown steering mode {self.mode!r}: use one of {MODES}")
        if not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight):
            raise ValueError(f"steering weight must be a finite number, got {self.weight!r}")
        if isinstance(self.positions, str):
            if self.positions not in NAMED_POSITIONS:
                raise ValueError(f"unknown positions {self.positions!r}: use one of "
                                 f"{NAMED_POSITIONS} or a tuple of token indices")
        else:
            object.__setattr__(self, "positions", tuple(int(p) for p in self.positions))
            if not self.positions:
                raise ValueError("positions is an empty tuple: give at least one token index")
        if self.layer not in self.vector.layers:
            raise ValueError(f"layer {self.layer} is not among the vector's layers "
                             f"{list(self.vector.layers)}")
        if self.mode == "adjust":
            self.vector.z_bar(self.layer)  # raises when z-bar is unknown

    def coefficients(self) -> tuple[Tensor, float, float]:
        """(d, a, b) such that the intervention is x + (a + b * x.d) * d."""
        w = float(self.weight)
        if self.mode == "add":
            return self.vector.vector(self.layer), w, 0.0
        u = self.vector.direction(self.layer)
        if self.mode == "adjust":
            return u, w * self.vector.z_bar(self.layer), -w
        return u, 0.0, -w

    def describe(self) -> str:
        name = self.vector.meta.get("instruction_id") or "vector"
        pos = self.positions if isinstance(self.positions, str) else list(self.positions)
        return f"{self.mode} {name} @L{self.layer} w={self.weight:g} pos={pos}"


@dataclass
class PositionContext:
    """Where the tokens a hook sees sit in each row: generation updates `start` every step.

    offsets: left-padding length per row; prompt_lens: unpadded prompt length per row;
    start: padded index of the first position in the current forward pass (0 for the prompt,
    then the sequence length so far, since with a KV cache a hook sees only the new token).
    rows: which of the original rows are still in the batch (generation drops finished rows);
    None: all of them.
    """

    offsets: Tensor | None = None
    prompt_lens: Tensor | None = None
    start: int = 0
    rows: Tensor | None = None

    def unpadded(self, batch: int, length: int, device) -> tuple[Tensor, Tensor]:
        if self.offsets is None:  # a plain forward pass: every token is prompt, no padding
            pos = torch.arange(length, device=device).expand(batch, length)
            return pos, torch.full((batch,), length, device=device)
        offsets, lens = self.offsets, self.prompt_lens
        if self.rows is not None:
            offsets, lens = offsets[self.rows], lens[self.rows]
        pos = self.start + torch.arange(length, device=device)[None, :] - offsets[:, None].to(device)
        return pos, lens.to(device)


@dataclass
class _Term:
    """One spec slot batched over rows; rows without it have a = b = 0 and d = 0."""

    positions: str | tuple[int, ...]
    d: Tensor  # (rows, d_model)
    a: Tensor  # (rows,)
    b: Tensor  # (rows,)
    needs_projection: bool = field(init=False)

    def __post_init__(self):
        self.needs_projection = bool((self.b != 0).any())

    def mask(self, pos: Tensor, prompt_lens: Tensor) -> Tensor:
        real = pos >= 0
        if self.positions == "all":
            return real
        if self.positions == "prompt":
            return real & (pos < prompt_lens[:, None])
        if self.positions == "generated":
            return pos >= prompt_lens[:, None]
        idx = torch.tensor(self.positions, device=pos.device)
        idx = torch.where(idx < 0, prompt_lens[:, None] + idx[None, :], idx[None, :])  # (rows, k)
        return real & (pos[:, :, None] == idx[:, None, :]).any(-1)


def _steering_hook(terms: list[_Term], ctx: PositionContext):
    def hook(x: Tensor, hook=None) -> Tensor:
        pos, prompt_lens = ctx.unpadded(x.shape[0], x.shape[1], x.device)
        for t in terms:
            d, a, b = (t.d, t.a, t.b) if ctx.rows is None or len(t.a) == 1 else \
                (t.d[ctx.rows], t.a[ctx.rows], t.b[ctx.rows])
            coef = a[:, None].to(x.dtype)
            if t.needs_projection:
                coef = coef + b[:, None].to(x.dtype) * torch.einsum("btd,bd->bt", x, d.to(x.dtype))
            coef = coef * t.mask(pos, prompt_lens)
            x = x + coef[..., None] * d[:, None, :].to(x.dtype)
        return x
    return hook


def check_specs(model, specs: Sequence[Steering]) -> None:
    for spec in specs:
        if not isinstance(spec, Steering):
            raise TypeError(f"expected wb.Steering specs, got {type(spec).__name__}")
        spec.vector.check_model(model, allow_cross_model=spec.allow_cross_model)
        hook_name(model, spec.hook, spec.layer)


def build_hooks(model, rows: Sequence[Sequence[Steering]], ctx: PositionContext) -> list[tuple[str, object]]:
    """Hooks applying `rows[i]` to batch row i (one row broadcasts to any batch)."""
    # a sweep repeats the same few specs over hundreds of rows: check and resolve each once
    names: dict[int, str] = {}
    for specs in rows:
        for spec in specs:
            if id(spec) not in names:
                check_specs(model, [spec])
                names[id(spec)] = hook_name(model, spec.hook, spec.layer)
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
def steer(model, *specs: Steering, rows: Sequence[Sequence[Steering]] | None = None,
          context: PositionContext | None = None) -> Iterator:
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
