"""Steering vectors: per-layer directions with z-bar and provenance, derived by a registry of methods.

    vec = wb.derive(acts, method="mean_diff")       # also "pca", "probe"
    vec.direction(12), vec.z_bar(12), vec.meta
    vec.save("lowercase.safetensors"); wb.SteeringVector.load("lowercase.safetensors", model=model)
    (-vec), (2 * vec), (vec + other)                 # new vectors

Sign convention of every method: the direction points from without- to with-instruction
activations (positive dot product with the mean difference).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.cache import PairActivations
from workbench.models import library_versions, model_info

Method = Callable[[Tensor, Tensor], Tensor]
METHODS: dict[str, Method] = {}


def method(name: str):
    def register(fn: Method) -> Method:
        METHODS[name] = fn
        return fn
    return register


@method("mean_diff")
def mean_diff(with_i: Float[Tensor, "n d"], without_i: Float[Tensor, "n d"]) -> Tensor:
    """The paper's: mean over pairs of (with - without)."""
    return (with_i - without_i).mean(0)


@method("pca")
def pca(with_i: Tensor, without_i: Tensor) -> Tensor:
    """First principal component of the uncentred per-pair differences."""
    diffs = with_i - without_i
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    sign = 1.0 if float(vh[0] @ diffs.mean(0)) >= 0 else -1.0  # SVD's sign is arbitrary
    return sign * vh[0] * diffs.norm(dim=1).mean()


@method("probe")
def probe(with_i: Tensor, without_i: Tensor) -> Tensor:
    """The weight vector of a logistic regression separating with- from without-instruction."""
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([with_i, without_i]).double().numpy()
    y = [1] * len(with_i) + [0] * len(without_i)
    scale = x.std(0).clip(min=1e-8)
    clf = LogisticRegression(C=1.0, max_iter=2000).fit((x - x.mean(0)) / scale, y)
    return torch.from_numpy(clf.coef_[0] / scale).to(with_i.dtype)


@dataclass(frozen=True)
class SteeringVector:
    """Per-layer steering vectors. `vectors[i]` belongs to model layer `layers[i]`; it is the unit
    direction as derived, times any scalar applied since (2 * v)."""

    vectors: Float[Tensor, "n_layers d_model"]
    layers: tuple[int, ...]
    z_bars: Float[Tensor, "n_layers"]  # mean projection of with-instruction activations on u
    z_bars_without: Float[Tensor, "n_layers"]
    norms: Float[Tensor, "n_layers"]  # norm of the raw (unnormalised) derived vector
    meta: dict = field(default_factory=dict, compare=False)

    def _slot(self, layer: int) -> int:
        if layer not in self.layers:
            raise ValueError(f"this vector has no layer {layer}; it has layers {list(self.layers)}")
        return self.layers.index(layer)

    def vector(self, layer: int) -> Float[Tensor, "d_model"]:
        """What `add` mode adds at weight 1: the unit direction times the vector's scale."""
        return self.vectors[self._slot(layer)]

    def direction(self, layer: int) -> Float[Tensor, "d_model"]:
        v = self.vector(layer)
        return v / v.norm().clamp(min=1e-12)

    def z_bar(self, layer: int) -> float:
        value = float(self.z_bars[self._slot(layer)])
        if math.isnan(value):
            raise ValueError("z-bar is unknown for this vector (a sum of vectors has none). Fix: "
                             "derive the vector from activations, or steer with mode='add'")
        return value

    def z_bar_without(self, layer: int) -> float:
        return float(self.z_bars_without[self._slot(layer)])

    @property
    def d_model(self) -> int:
        return self.vectors.shape[-1]

    # arithmetic: new vectors, provenance kept and the operation recorded
    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def __mul__(self, c: float) -> SteeringVector:
        c = float(c)
        if not math.isfinite(c):
            raise ValueError(f"cannot scale a steering vector by {c}")
        sign = 1.0 if c >= 0 else -1.0  # the projection on -u is minus the projection on u
        return replace(self, vectors=self.vectors * c, z_bars=self.z_bars * sign,
                       z_bars_without=self.z_bars_without * sign, meta=_op(self.meta, f"{c:g} * v"))

    __rmul__ = __mul__

    def __add__(self, other: SteeringVector) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        for key in ("weight_hash", "hook", "d_model"):
            if self.meta.get(key) != other.meta.get(key):
                raise ValueError(f"cannot add vectors with different {key} "
                                 f"({self.meta.get(key)!r} vs {other.meta.get(key)!r})")
        if self.layers != other.layers:
            raise ValueError(f"cannot add vectors over different layers ({list(self.layers)} vs "
                             f"{list(other.layers)}). Fix: derive both over the same layers.")
        nan = torch.full_like(self.z_bars, float("nan"))
        meta = _op(self.meta, f"v + [{other.meta.get('instruction_id')}]")
        return replace(self, vectors=self.vectors + other.vectors, z_bars=nan,
                       z_bars_without=nan, norms=nan, meta=meta)

    def check_model(self, model, *, allow_cross_model: bool = False) -> None:
        """Refuse a model of another width, or another model unless asked for explicitly."""
        d, name = model.cfg.d_model, getattr(getattr(model, "wb_info", None), "name", "?")
        if d != self.d_model:
            raise ValueError(
                f"this vector has width {self.d_model} (from {self.meta.get('model')!r}) but "
                f"{name!r} has d_model {d}. Fix: map it with a fitted linear map "
                f"(wb.analysis.fit_linear_map) or use a vector derived on this model")
        ours = getattr(getattr(model, "wb_info", None), "weight_hash", None)
        # the name too: tiny-instruct and tiny-base share their random weights (same seed) but
        # not their tokenizer, EOS or prompt format
        same = ours == self.meta.get("weight_hash") and name == self.meta.get("model")
        if not allow_cross_model and not same:
            raise ValueError(
                f"this vector was derived on {self.meta.get('model')!r} (weights "
                f"{str(self.meta.get('weight_hash'))[:12]}) but the model is {name!r} (weights "
                f"{str(ours)[:12]}). Fix: pass allow_cross_model=True to use it on another model")
        if max(self.layers) >= model.cfg.n_layers:
            raise ValueError(f"this vector has layer {max(self.layers)} but {name!r} has only "
                             f"{model.cfg.n_layers} layers")

    def save(self, path: str | Path) -> Path:
        """Write `path` (safetensors, metadata embedded) and a JSON sidecar beside it."""
        from safetensors.torch import save_file

        path = Path(path).with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = dict(vectors=self.vectors, layers=torch.tensor(self.layers), z_bars=self.z_bars,
                       z_bars_without=self.z_bars_without, norms=self.norms)
        meta = json.dumps(self.meta, sort_keys=True, default=str)
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={"workbench": meta})
        tmp.replace(path)
        path.with_suffix(".json").write_text(json.dumps(self.meta, indent=1, sort_keys=True, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path, *, model=None, allow_cross_model: bool = False) -> SteeringVector:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no steering vector at {path}")
        try:
            with safe_open(path, "pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
                meta = json.loads((f.metadata() or {})["workbench"])
            vec = cls(tensors["vectors"], tuple(int(l) for l in tensors["layers"]),
                      tensors["z_bars"], tensors["z_bars_without"], tensors["norms"], meta)
        except Exception as err:
            raise ValueError(f"{path} is not a readable workbench steering vector ({err}). Fix: "
                             f"re-derive and save it; the file may be truncated or corrupt") from None
        if model is not None:
            vec.check_model(model, allow_cross_model=allow_cross_model)
        return vec


def _op(meta: dict, op: str) -> dict:
    return {**meta, "operations": [*meta.get("operations", []), op]}


def derive(acts: PairActivations, method: str = "mean_diff", *,
           instruction_id: str | None = None, kwargs: dict | None = None) -> SteeringVector:
    """One direction per cached layer, by `method` (a key of METHODS)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {sorted(METHODS)}")
    if not isinstance(acts.with_instruction, Tensor) or acts.with_instruction.dim() != 3:
        raise ValueError(f"derive needs one activation per prompt (position 'last', 'mean' or an "
                         f"int), not position {acts.position!r}. Fix: cache with position='last'")
    with_i, without_i = acts.with_instruction.float(), acts.without_instruction.float()
    if len(with_i) < 2 and method != "mean_diff":
        raise ValueError(f"method {method!r} needs at least 2 pairs, got {len(with_i)}")
    raws = torch.stack([METHODS[method](with_i[:, s], without_i[:, s]) for s in range(len(acts.layers))])
    mean = (with_i - without_i).mean(0)
    sign = torch.sign((raws * mean).sum(-1))
    raws = raws * torch.where(sign == 0, 1.0, sign)[:, None]
    units = raws / raws.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    z_bars = torch.einsum("nld,ld->l", with_i, units) / len(with_i)
    z_without = torch.einsum("nld,ld->l", without_i, units) / len(without_i)
    ids = {p.instruction_id for p in acts.pairs}
    texts = json.dumps([acts.prompts_with, acts.prompts_without])
    meta = dict(acts.provenance, hook=acts.hook, position=acts.position, method=method,
                format=acts.format.to_dict(), n_pairs=acts.n_pairs,
                instruction_id=instruction_id or (ids.pop() if len(ids) == 1 else None),
                kwargs=kwargs if kwargs is not None else _common_kwargs(acts),
                data_hash=hashlib.sha256(texts.encode()).hexdigest(),
                versions=library_versions())
    return SteeringVector(units, tuple(acts.layers), z_bars, z_without, raws.norm(dim=-1), meta)


def carry_directions(vec: SteeringVector, layer_pairs, map_direction=None, target_acts=None, *,
                     z_from_source: bool = True, meta: dict | None = None) -> SteeringVector:
    """`vec` carried to other layers (of this or another model): for each (t, s) in `layer_pairs`
    the unit direction of source layer s, passed through `map_direction(s, t, d)` when given,
    becomes the direction of layer t. z-bar: the mean projections of `target_acts` (the target's
    PairActivations, both sides) when given, else the source's (z_from_source) or 0. `meta` is
    merged into the source's."""
    units = []
    for t, s in layer_pairs:
        d = vec.direction(s).float()
        d = map_direction(s, t, d).float() if map_direction is not None else d
        units.append(d / d.norm().clamp(min=1e-12))
    units = torch.stack(units)
    layers = tuple(t for t, _ in layer_pairs)
    if target_acts is not None:
        slots = [target_acts.layers.index(t) for t in layers]
        z, z_without = (torch.einsum("nld,ld->l", acts[:, slots].float(), units) / len(acts)
                        for acts in (target_acts.with_instruction, target_acts.without_instruction))
    elif z_from_source:
        z = torch.tensor([vec.z_bar(s) for _, s in layer_pairs])
        z_without = torch.tensor([vec.z_bar_without(s) for _, s in layer_pairs])
    else:
        z, z_without = torch.zeros(len(layers)), torch.zeros(len(layers))
    meta = {**vec.meta, "d_model": units.shape[-1], **(meta or {})}
    return SteeringVector(units, layers, z, z_without, torch.ones(len(layers)), meta)


def _common_kwargs(acts: PairActivations) -> dict:
    kwargs = [p.kwargs for p in acts.pairs]
    return kwargs[0] if all(k == kwargs[0] for k in kwargs) else {"varied": True}
