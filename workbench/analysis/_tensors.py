"""Shape checks and small tensor helpers shared by the analysis modules.

The analyses take the workbench's own objects (a `SteeringVector`, a `PairActivations`) as well
as raw tensors: `per_layer_rows` and `pair_tensors` turn either into plain float tensors and the
layer list they belong to, refusing layers that do not match. `PerLayer` and `Pairs` name those
two kinds of input in the analyses' signatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from workbench.cache import AllPositionActivations, PairActivations
from workbench.vectors import SteeringVector

# a steering vector, or one row per layer (a plain tensor, with layers=)
PerLayer: TypeAlias = SteeringVector | Float[Tensor, "n_layers d_model"]
# paired activations, or one side of them as a plain tensor (the other side and layers= beside it)
Pairs: TypeAlias = PairActivations | Float[Tensor, "n_pairs n_layers d_model"]


def as_float(x: Tensor) -> Tensor:
    """A detached float32 CPU copy: analyses are cheap next to caching, and bf16 cosines are noisy."""
    return x.detach().to(device="cpu", dtype=torch.float32)


def unit(x: Tensor) -> Tensor:
    """Unit vectors along the last dim; a zero vector stays zero (so its cosines read 0)."""
    return F.normalize(x, dim=-1)


def check_per_layer(x: Tensor, layers: Sequence[int], name: str) -> Tensor:
    """Check `x` is (n_layers, d) with one slot per entry of `layers`."""
    if x.ndim != 2 or x.shape[0] != len(layers):
        raise ValueError(f"{name}: expected shape (n_layers={len(layers)}, d), got {tuple(x.shape)}")
    return as_float(x)


def check_pairs(with_acts: Tensor, without_acts: Tensor, layers: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Check paired activations are both (n_pairs, n_layers, d_model) and return float copies."""
    if with_acts.shape != without_acts.shape:
        raise ValueError(f"with_acts {tuple(with_acts.shape)} and without_acts {tuple(without_acts.shape)} differ")
    if with_acts.ndim != 3 or with_acts.shape[1] != len(layers):
        raise ValueError(
            f"expected (n_pairs, n_layers={len(layers)}, d_model) activations, got {tuple(with_acts.shape)}"
        )
    return as_float(with_acts), as_float(without_acts)


def _slots(have: Sequence[int], want: Sequence[int], name: str) -> list[int]:
    missing = [l for l in want if l not in have]
    if missing:
        raise ValueError(
            f"{name} has no layer {missing} (it has layers {list(have)}). Fix: derive or "
            f"cache it over those layers, or pass layers= within {list(have)}"
        )
    return [list(have).index(l) for l in want]


def per_layer_rows(
    x: PerLayer, layers: Sequence[int] | None, name: str
) -> tuple[Float[Tensor, "n_layers d"], list[int]]:
    """(n_layers, d) float rows and their layers, from a SteeringVector or a tensor.

    A SteeringVector gives its own layers when `layers` is None, else the rows of `layers` (each
    must be one of its layers). A tensor needs `layers`, one per row. Rows are the vector's
    `vectors` (unit directions times any scalar applied).
    """
    if isinstance(x, SteeringVector):
        want = list(x.layers) if layers is None else [int(l) for l in layers]
        return as_float(x.vectors[_slots(x.layers, want, name)]), want
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a SteeringVector or a (n_layers, d) tensor, got {type(x).__name__}")
    if layers is None:
        raise ValueError(f"{name} is a plain tensor: pass layers= (the model layer of each row)")
    return check_per_layer(x, layers, name), [int(l) for l in layers]


def common_layers(items: Sequence[PerLayer], layers: Sequence[int] | None, names: Sequence[str]) -> list[int]:
    """The layers an analysis of several vectors runs over: `layers` when given, else the layers
    every SteeringVector has in common (refused when they differ, so nothing is silently dropped)."""
    if layers is not None:
        return [int(l) for l in layers]
    own = [(n, tuple(x.layers)) for n, x in zip(names, items) if isinstance(x, SteeringVector)]
    if not own:
        raise ValueError("plain tensors need layers= (the model layer of each row)")
    if len({l for _, l in own}) > 1:
        detail = "; ".join(f"{n}: {list(l)}" for n, l in own)
        raise ValueError(
            f"the vectors cover different layers ({detail}). Fix: pass layers= with layers all of them have"
        )
    return list(own[0][1])


def pair_tensors(
    with_acts: Pairs,
    without_acts: Float[Tensor, "n_pairs n_layers d_model"] | None = None,
    layers: Sequence[int] | None = None,
    name: str = "activations",
) -> tuple[Float[Tensor, "n_pairs n_layers d"], Float[Tensor, "n_pairs n_layers d"], list[int]]:
    """(n_pairs, n_layers, d) float tensors of both sides and their layers.

    From a PairActivations (one activation per prompt; `layers` selects among its layers, default
    all) or from two tensors and `layers`.
    """
    if isinstance(with_acts, AllPositionActivations):
        raise ValueError(
            f"{name}: needs one activation per prompt, not every position (cache_pairs_all_positions). "
            f"Fix: cache with wb.cache_pairs(..., position='last')"
        )
    if isinstance(with_acts, PairActivations):
        if without_acts is not None:
            raise ValueError(f"{name}: a PairActivations already holds both sides; pass it alone")
        acts = with_acts
        w, wo = acts.with_instruction, acts.without_instruction
        if w.ndim != 3:
            raise ValueError(
                f"{name}: needs one activation per prompt (position 'last', 'mean' or an "
                f"int), not position {acts.position!r}. Fix: cache with position='last'"
            )
        want = list(acts.layers) if layers is None else [int(l) for l in layers]
        slots = _slots(acts.layers, want, name)
        return as_float(w[:, slots]), as_float(wo[:, slots]), want
    if without_acts is None or layers is None:
        raise ValueError(f"{name}: pass a PairActivations, or both sides' tensors and layers=")
    w, wo = check_pairs(with_acts, without_acts, layers)
    return w, wo, [int(l) for l in layers]


def offdiag_cosines(x: Tensor) -> Tensor:
    """(n, L, d) -> (L, n*(n-1)/2): cosine of every unordered pair of rows, per layer."""
    u = unit(x)
    gram = torch.einsum("ild,jld->lij", u, u)
    i, j = torch.triu_indices(x.shape[0], x.shape[0], offset=1)
    return gram[:, i, j]
