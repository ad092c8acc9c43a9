"""Steering specs: one frozen record per intervention (vector, layer, mode, weight, positions).

    spec = wb.Steering(vec, layer=12, mode="adjust", weight=1.0, positions="all")
    with wb.steer(model, spec):           # workbench.hooks: several specs at several layers compose
        logits = model(tokens)

Modes, for activation x at the spec's layer, u = vec.direction(layer), w = weight:
    add     x + w * v            v = vec.vector(layer) (u times the vector's own scale, so
                                 add(2 * vec, 1) == add(vec, 2))
    adjust  x + w * (z - x.u) u  z = vec.z_bar(layer); w = 1 sets every position's projection on
                                 u to z (the paper's format setting), w = 0 changes nothing, and
                                 values between move the projection that fraction of the way
    ablate  x - w * (x.u) u      w = 1 removes the component along u
All three are x + (a + b * x.u) * d for a direction d and scalars a, b (`coefficients`), which is
how the hook computes them (workbench.hooks). A new mode is a name in MODES and its (d, a, b).

Positions count tokens of the unpadded sequence from 0, the prompt first: "all" (prompt and
generated: the paper's semantics), "prompt", "generated", or explicit indices (an int or a tuple;
negative ones count back from the prompt's end, so -1 is the last prompt token). Outside
wb.generate every token passed counts as prompt. An index no row ever reaches is an error.

Specs compare equal when their fields do (`Steering.__eq__` compares vectors by value) and are
hashable.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

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

    def __post_init__(self) -> None:
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

    def coefficients(self) -> tuple[Float[Tensor, " d_model"], float, float]:
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


def _weight(w: object) -> float:
    if isinstance(w, Tensor) and w.dim() == 0 and w.dtype != torch.bool:
        w = float(w)
    if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w):
        raise ValueError(
            f"steering weight must be a finite number, got {w!r} "
            f"({type(w).__name__}). Fix: pass a real number, e.g. weight=2.0"
        )
    return float(w)


def _positions(positions: object) -> str | tuple[int, ...]:
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
        if not isinstance(items, Iterable) or any(isinstance(p, bool) for p in items):
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
