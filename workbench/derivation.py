"""Deriving steering vectors from cached pairs, by a registry of interchangeable methods, and
carrying a vector to other layers or another model.

In a notebook:

    vec = wb.derive(acts, method="mean_diff")        # also "pca", "probe": wb.DERIVATION_METHODS
    carried = carry_directions(vec, [LayerPair(source=12, target=20)])

Each method is a pure function (with-instruction rows, without-instruction rows) -> a direction,
one layer at a time. Sign convention of every method: the direction points from without- to
with-instruction activations (positive dot product with the mean difference); `derive` enforces
it. A new method is a function registered with `@derivation_method("name")` here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.cache import PairActivations
from workbench.models import library_versions
from workbench.types import LayerPair
from workbench.vectors import SteeringVector

Method: TypeAlias = Callable[
    [Float[Tensor, "n_pairs d_model"], Float[Tensor, "n_pairs d_model"]], Float[Tensor, " d_model"]
]
DERIVATION_METHODS: dict[str, Method] = {}
# map_direction(source layer, target layer, unit direction) -> the direction in the target's space
MapDirection: TypeAlias = Callable[[int, int, Float[Tensor, " d_source"]], Float[Tensor, " d_target"]]


def derivation_method(name: str) -> Callable[[Method], Method]:
    """Register a derivation method under `name` (a key of DERIVATION_METHODS, for wb.derive)."""

    def register(fn: Method) -> Method:
        DERIVATION_METHODS[name] = fn
        return fn

    return register


@derivation_method("mean_diff")
def mean_diff(
    with_i: Float[Tensor, "n_pairs d_model"], without_i: Float[Tensor, "n_pairs d_model"]
) -> Float[Tensor, " d_model"]:
    """The paper's: mean over pairs of (with - without)."""
    return (with_i - without_i).mean(0)


@derivation_method("pca")
def pca(
    with_i: Float[Tensor, "n_pairs d_model"], without_i: Float[Tensor, "n_pairs d_model"]
) -> Float[Tensor, " d_model"]:
    """First principal component of the uncentred per-pair differences."""
    diffs = with_i - without_i
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    sign = 1.0 if float(vh[0] @ diffs.mean(0)) >= 0 else -1.0  # SVD's sign is arbitrary
    direction: Tensor = sign * vh[0] * diffs.norm(dim=1).mean()
    return direction


@derivation_method("probe")
def probe(
    with_i: Float[Tensor, "n_pairs d_model"], without_i: Float[Tensor, "n_pairs d_model"]
) -> Float[Tensor, " d_model"]:
    """The weight vector of a logistic regression separating with- from without-instruction."""
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([with_i, without_i]).double().numpy()
    y = [1] * len(with_i) + [0] * len(without_i)
    scale = x.std(0).clip(min=1e-8)
    clf = LogisticRegression(C=1.0, max_iter=2000).fit((x - x.mean(0)) / scale, y)
    return torch.from_numpy(clf.coef_[0] / scale).to(with_i.dtype)


def derive(
    acts: PairActivations,
    method: str = "mean_diff",
    *,
    instruction_id: str | None = None,
    kwargs: dict[str, Any] | None = None,
) -> SteeringVector:
    """One direction per cached layer, by `method` (a key of DERIVATION_METHODS)."""
    if method not in DERIVATION_METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {sorted(DERIVATION_METHODS)}")
    if not isinstance(acts, PairActivations) or acts.with_instruction.dim() != 3:
        raise ValueError(
            f"derive needs one activation per prompt (position 'last', 'mean' or an "
            f"int), not position {acts.position!r}. Fix: cache with position='last'"
        )
    with_i, without_i = acts.with_instruction.float(), acts.without_instruction.float()
    if len(with_i) < 2 and method != "mean_diff":
        raise ValueError(f"method {method!r} needs at least 2 pairs, got {len(with_i)}")
    derive_one = DERIVATION_METHODS[method]
    raws = torch.stack([derive_one(with_i[:, s], without_i[:, s]) for s in range(len(acts.layers))])
    mean = (with_i - without_i).mean(0)
    sign = torch.sign((raws * mean).sum(-1))
    raws = raws * torch.where(sign == 0, 1.0, sign)[:, None]
    units = raws / raws.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    z_bars = torch.einsum("nld,ld->l", with_i, units) / len(with_i)
    z_without = torch.einsum("nld,ld->l", without_i, units) / len(without_i)
    ids = {p.instruction_id for p in acts.pairs}
    texts = json.dumps([acts.prompts_with, acts.prompts_without])
    meta = dict(
        acts.provenance,
        hook=acts.hook,
        position=acts.position,
        method=method,
        format=acts.format.to_dict(),
        n_pairs=acts.n_pairs,
        instruction_id=instruction_id or (ids.pop() if len(ids) == 1 else None),
        kwargs=kwargs if kwargs is not None else _common_kwargs(acts),
        data_hash=hashlib.sha256(texts.encode()).hexdigest(),
        versions=library_versions(),
    )
    return SteeringVector(units, tuple(acts.layers), z_bars, z_without, raws.norm(dim=-1), meta)


def carry_directions(
    vec: SteeringVector,
    layer_pairs: Sequence[LayerPair],
    map_direction: MapDirection | None = None,
    target_acts: PairActivations | None = None,
    *,
    z_from_source: bool = True,
    meta: dict[str, Any] | None = None,
) -> SteeringVector:
    """`vec` carried to other layers (of this or another model): for each (source, target) in
    `layer_pairs` the unit direction of the source layer, passed through
    `map_direction(source, target, direction)` when given, becomes the direction of the target
    layer. z-bar: the mean projections of `target_acts` (the target's PairActivations, both
    sides) when given, else the source's (z_from_source) or unknown (NaN, so that mode "adjust"
    is refused rather than setting the projection to 0). `meta` is merged into the source's."""
    pairs = [LayerPair(*pair) for pair in layer_pairs]
    directions = []
    for source, target in pairs:
        d = vec.direction(source).float()
        d = map_direction(source, target, d).float() if map_direction is not None else d
        directions.append(d / d.norm().clamp(min=1e-12))
    units = torch.stack(directions)
    layers = tuple(p.target for p in pairs)
    if target_acts is not None:
        slots = [target_acts.layers.index(t) for t in layers]
        z, z_without = (
            torch.einsum("nld,ld->l", acts[:, slots].float(), units) / len(acts)
            for acts in (target_acts.with_instruction, target_acts.without_instruction)
        )
    elif z_from_source:
        z = torch.tensor([vec.z_bar(p.source) for p in pairs])
        z_without = torch.tensor([vec.z_bar_without(p.source) for p in pairs])
    else:
        z, z_without = torch.full((len(layers),), float("nan")), torch.full((len(layers),), float("nan"))
    meta = {**vec.meta, "d_model": units.shape[-1], **(meta or {})}
    return SteeringVector(units, layers, z, z_without, torch.ones(len(layers)), meta)


def _common_kwargs(acts: PairActivations) -> dict[str, Any]:
    kwargs = [p.kwargs for p in acts.pairs]
    return kwargs[0] if all(k == kwargs[0] for k in kwargs) else {"varied": True}
