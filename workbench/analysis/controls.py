"""A control vector, and removing its direction from vectors and activations.

    ctrl = A.control_vector(model, split.train, n=64, seed=0)     # neutral sentence appended, no instruction
    A.cosine_matrix({"title": vec, "control": ctrl})              # beside the instruction vectors
    A.cosine_matrix({"title": vec, "json": vec2}, project_out=ctrl)
    A.projection_separation(held_out, A.project_out(vec, ctrl))   # separation of what is left

An instruction vector is the mean of (with - without) over pairs whose "with" side appends an
instruction sentence. Part of it is what appending *any* sentence does to the last-token state;
the control vector (pairs appending a neutral sentence, `wb.pairs.control_pairs`) measures that
part. Removing its direction (`project_out`) keeps what is specific to the instruction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.analysis._tensors import PerLayer, as_float, pair_tensors, per_layer_rows, unit
from workbench.cache import PairActivations, cache_pairs
from workbench.derivation import derive
from workbench.pairs import CONTROL_ID, NEUTRAL_SENTENCES, control_pairs
from workbench.vectors import SteeringVector

if TYPE_CHECKING:
    from workbench.types import Model


# what project_out takes and gives back: the same kind of object
ProjectedT = TypeVar("ProjectedT", SteeringVector, PairActivations, Tensor)


def control_vector(
    model: Model,
    queries: Sequence[str],
    *,
    n: int | None = 64,
    seed: int = 0,
    layers: Sequence[int] | None = None,
    method: str = "mean_diff",
    batch_size: int = 16,
    sentences: Sequence[str] = NEUTRAL_SENTENCES,
) -> SteeringVector:
    """The control vector of `model`: derived (by `method`) from `control_pairs(queries, n, seed)`,
    the queries with and without a neutral sentence, cached like instruction pairs (last prompt
    token, resid_post, every layer unless `layers`). Its `meta["instruction_id"]` is
    "control:neutral". Use training queries, as for the instruction vectors it is compared with."""
    pairs = control_pairs(queries, n=n, seed=seed, sentences=sentences)
    acts = cache_pairs(model, pairs, layers=layers, batch_size=batch_size)
    return derive(acts, method=method, instruction_id=CONTROL_ID)


def remove_direction(
    x: Float[Tensor, "*batch n_layers d"], control: Float[Tensor, "n_layers d"]
) -> Float[Tensor, "*batch n_layers d"]:
    """x minus its component along each layer's unit control direction. What is left of a row
    along the control itself (rounding residue, under 1e-5 of its norm) is set to exactly zero,
    so its cosines read 0 rather than those of noise."""
    c = unit(as_float(control))
    left = x - torch.einsum("...ld,ld->...l", x, c)[..., None] * c
    return torch.where(left.norm(dim=-1, keepdim=True) <= 1e-5 * x.norm(dim=-1, keepdim=True), 0.0, left)


def project_out(
    x: ProjectedT, control: PerLayer, *, acts: PairActivations | None = None, layers: Sequence[int] | None = None
) -> ProjectedT:
    """`x` with the direction of `control` (a SteeringVector, or a (n_layers, d) tensor with
    `layers`) removed at every layer. Returns the same kind of object as `x`:

    - a SteeringVector: new directions (the old scale kept), norms of the projected raw vector,
      and z-bars from `acts` when given (else unknown, NaN: steer it with mode "add");
      `meta["operations"]` records the projection;
    - a PairActivations: both sides projected (one activation per prompt);
    - a tensor (..., n_layers, d): needs `layers` unless `control` is a SteeringVector over
      exactly its layers.
    """
    if isinstance(x, SteeringVector):
        c, layers = per_layer_rows(control, list(x.layers), "control")
        v = as_float(x.vectors)
        scale = v.norm(dim=-1, keepdim=True)
        left = remove_direction(v, c)
        kept = left.norm(dim=-1)  # |u - (u.c)c| for unit u: the share of the direction left
        units = unit(left)
        if acts is not None:
            w, wo, _ = pair_tensors(acts, layers=layers, name="acts")
            z, z_without = (torch.einsum("nld,ld->l", a, units) / len(a) for a in (w, wo))
        else:
            z = torch.full((len(layers),), float("nan"))
            z_without = torch.full((len(layers),), float("nan"))
        label = control.meta.get("instruction_id") if isinstance(control, SteeringVector) else "tensor"
        meta = {**x.meta, "operations": [*x.meta.get("operations", []), f"project_out [{label}]"]}
        kept_norm = x.norms.float() * (kept / scale[:, 0].clamp(min=1e-12))
        return SteeringVector(units * scale, tuple(x.layers), z, z_without, kept_norm, meta)
    if isinstance(x, PairActivations):
        w, wo, layers = pair_tensors(x, name="activations")
        c, _ = per_layer_rows(control, layers, "control")
        return replace(x, with_instruction=remove_direction(w, c), without_instruction=remove_direction(wo, c))
    if isinstance(x, Tensor):
        if layers is None and isinstance(control, SteeringVector):
            layers = list(control.layers)
        c, _ = per_layer_rows(control, layers, "control")
        if x.shape[-2:] != c.shape:
            raise ValueError(f"x has trailing shape {tuple(x.shape[-2:])}, the control {tuple(c.shape)}")
        return remove_direction(as_float(x), c)
    raise TypeError(f"project_out takes a SteeringVector, PairActivations or tensor, got {type(x).__name__}")
