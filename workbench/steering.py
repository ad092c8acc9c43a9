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

Positions count tokens of the unpadded sequence from 0, the prompt first: "all" (prompt and
generated: the paper's semantics), "prompt", "generated", or explicit indices (an int or a tuple;
negative ones count back from the prompt's end, so -1 is the last prompt token). Outside
wb.generate every token passed counts as prompt. An index no row ever reaches is an error.

The hook computes in the activation's dtype on the activation's device; vectors stay float32 on
the CPU and are cast on first use (once per device and dtype). Specs compare equal when their
fields do (`Steering.__eq__` compares vectors by value) and are hashable.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

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
        object.__setattr__(self, "weight", _weight(self.weight))
        object.__setattr__(self, "positions", _positions(self.positions))
        if self.layer not in self.vector.layers:
            raise ValueError(f"layer {self.layer} is not among the vector's layers {list(self.vector.layers)}")
        if self.mode == "adjust":
            self.vector.z_bar(self.layer)  # raises when z-bar is unknown
        derived_at = self.vector.meta.get("hook")
        if derived_at is not None and _short(derived_at) != _short(self.hook):
            raise ValueError(
                f"this vector was derived at hook {_short(derived_at)!r} but the spec steers at "
                f"{_short(self.hook)!r}. Fix: pass hook={_short(derived_at)!r} to wb.Steering, or "
                f"derive the vector at that hook (wb.cache_pairs(..., hook={_short(self.hook)!r}))"
            )

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


def _weight(w) -> float:
    if isinstance(w, Tensor) and w.dim() == 0 and w.dtype != torch.bool:
        w = float(w)
    if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w):
        raise ValueError(
            f"steering weight must be a finite number, got {w!r} "
            f"({type(w).__name__}). Fix: pass a real number, e.g. weight=2.0"
        )
    return float(w)


def _positions(positions) -> str | tuple[int, ...]:
    if isinstance(positions, str):
        if positions not in NAMED_POSITIONS:
            raise ValueError(
                f"unknown positions {positions!r}: use one of "
                f"{NAMED_POSITIONS}, a token index or a tuple of token indices"
            )
        return positions
    items = (
        [positions]
        if isinstance(positions, (numbers.Integral, Tensor)) and getattr(positions, "ndim", 0) == 0
        else positions
    )
    try:
        if any(isinstance(p, bool) for p in items):
            raise TypeError
        out = tuple(operator.index(p) for p in items)
    except TypeError:
        raise ValueError(
            f"positions must be 'all', 'prompt', 'generated', a token index or a "
            f"tuple of token indices (ints), got {positions!r}"
        ) from None
    if not out:
        raise ValueError("positions is an empty tuple: give at least one token index")
    return out


def _short(hook: str) -> str:
    """The hook point alone: blocks.3.hook_resid_post, hook_resid_post, resid_post -> resid_post."""
    return str(hook).rsplit(".", 1)[-1].removeprefix("hook_")


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
    refuse explicit positions no row reaches. The tensors may live on any device.
    """

    offsets: Tensor | None = None
    prompt_lens: Tensor | None = None
    start: int = 0
    rows: Tensor | None = None
    new_tokens: int = 0

    def unpadded(self, batch: int, length: int, device) -> tuple[Tensor, Tensor]:
        if self.offsets is None:  # a plain forward pass: every token is prompt, no padding
            pos = torch.arange(length, device=device).expand(batch, length)
            return pos, torch.full((batch,), length, device=device)
        offsets, lens = self.offsets.to(device), self.prompt_lens.to(device)  # no-ops when there
        if self.rows is not None:
            rows = self.rows.to(device)
            offsets, lens = offsets[rows], lens[rows]
        pos = self.start + torch.arange(length, device=device)[None, :] - offsets[:, None]
        return pos, lens


@dataclass
class _Term:
    """One spec slot batched over rows; rows without it have a = b = 0 and d = 0."""

    positions: str | tuple[int, ...]
    d: Tensor  # (rows, d_model), float32 on the CPU
    a: Tensor  # (rows,)
    b: Tensor  # (rows,)
    needs_projection: bool = field(init=False)
    _cast: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self):
        self.needs_projection = bool((self.b != 0).any())

    def on(self, device, dtype) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """(d, a, b, indices) on `device` in `dtype`: copied once, not at every decode step."""
        key = (torch.device(device), dtype)
        if key not in self._cast:
            idx = None if isinstance(self.positions, str) else torch.tensor(self.positions, device=device)
            self._cast[key] = (*(t.to(device, dtype) for t in (self.d, self.a, self.b)), idx)
        return self._cast[key]

    def mask(self, pos: Tensor, prompt_lens: Tensor, idx: Tensor | None = None) -> Tensor:
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


def _steering_hook(terms: list[_Term], ctx: PositionContext):
    def hook(x: Tensor, hook=None) -> Tensor:
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
    model, *specs: Steering, rows: Sequence[Sequence[Steering]] | None = None, context: PositionContext | None = None
) -> Iterator:
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
