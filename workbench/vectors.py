"""Steering vectors: per-layer directions with z-bar and provenance, saved and loaded with checks.

    vec = wb.derive(acts, method="mean_diff")       # workbench.derivation: also "pca", "probe"
    vec.direction(12), vec.z_bar(12), vec.meta
    vec.save("lowercase.safetensors"); wb.SteeringVector.load("lowercase.safetensors", model=model)
    (-vec), (2 * vec), (vec + other)                 # new vectors

Two vectors are equal (`==`) when their layers, tensors and provenance (as saved) are equal; a NaN
z-bar (unknown) equals a NaN z-bar. Vectors are hashable, by layers and width only, so equal
vectors hash alike.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from workbench.types import Model


class VectorFileError(ValueError):
    """A file that does not hold a readable steering vector (truncated, corrupt, not a vector).
    A vector that reads fine but belongs to another model raises a plain ValueError instead."""


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """Per-layer steering vectors. `vectors[i]` belongs to model layer `layers[i]`; it is the unit
    direction as derived, times any scalar applied since (2 * v). Vectors must be finite; a
    z-bar or norm may be NaN (unknown, as for a sum) but never infinite."""

    vectors: Float[Tensor, "n_layers d_model"]
    layers: tuple[int, ...]
    z_bars: Float[Tensor, " n_layers"]  # mean projection of with-instruction activations on u
    z_bars_without: Float[Tensor, " n_layers"]
    norms: Float[Tensor, " n_layers"]  # norm of the raw (unnormalised) derived vector
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check_finite()

    def check_finite(self) -> None:
        """Refuse NaN or inf directions (every steered token would turn to NaN and every response
        come out empty), and infinite z-bars or norms; NaN there means unknown."""
        if not torch.isfinite(self.vectors).all():
            bad = [l for l, row in zip(self.layers, self.vectors) if not torch.isfinite(row).all()]
            raise ValueError(
                f"this steering vector holds NaN or inf values (layers {bad}). Fix: "
                f"derive it again from activations that are finite (a model run in "
                f"float16 can overflow: load it in float32 or bfloat16)"
            )
        for name in ("z_bars", "z_bars_without", "norms"):
            if torch.isinf(getattr(self, name)).any():
                raise ValueError(
                    f"this steering vector's {name} holds inf (NaN marks unknown, "
                    f"inf is never right). Fix: derive it again, or pass NaN for "
                    f"an unknown value"
                )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return (
            self.layers == other.layers
            and all(
                _equal(getattr(self, n), getattr(other, n)) for n in ("vectors", "z_bars", "z_bars_without", "norms")
            )
            and _as_saved(self.meta) == _as_saved(other.meta)
        )

    def __hash__(self) -> int:
        # tensors cannot be hashed by value; layers and width are a part of what __eq__ compares
        return hash((self.layers, self.d_model))

    def _slot(self, layer: int) -> int:
        if layer not in self.layers:
            raise ValueError(f"this vector has no layer {layer}; it has layers {list(self.layers)}")
        return self.layers.index(layer)

    def vector(self, layer: int) -> Float[Tensor, " d_model"]:
        """What `add` mode adds at weight 1: the unit direction times the vector's scale."""
        return self.vectors[self._slot(layer)]

    def direction(self, layer: int) -> Float[Tensor, " d_model"]:
        v = self.vector(layer)
        unit: Tensor = v / v.norm().clamp(min=1e-12)
        return unit

    def z_bar(self, layer: int) -> float:
        value = float(self.z_bars[self._slot(layer)])
        if math.isnan(value):
            raise ValueError(
                "z-bar is unknown for this vector (a sum of vectors has none, nor a "
                "vector carried to other layers or models without their activations). "
                "Fix: derive the vector from activations (or pass the target's "
                "activations when carrying it), or steer with mode='add'"
            )
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
        return replace(
            self,
            vectors=self.vectors * c,
            z_bars=self.z_bars * sign,
            z_bars_without=self.z_bars_without * sign,
            meta=_op(self.meta, f"{c:g} * v"),
        )

    __rmul__ = __mul__

    def __add__(self, other: SteeringVector) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        for key in ("weight_hash", "hook", "d_model"):
            if self.meta.get(key) != other.meta.get(key):
                raise ValueError(
                    f"cannot add vectors with different {key} ({self.meta.get(key)!r} vs {other.meta.get(key)!r})"
                )
        if self.layers != other.layers:
            raise ValueError(
                f"cannot add vectors over different layers ({list(self.layers)} vs "
                f"{list(other.layers)}). Fix: derive both over the same layers."
            )
        meta = _op(self.meta, f"v + [{other.meta.get('instruction_id')}]")
        # three tensors, not one: safetensors refuses to save tensors that share memory
        nan = [torch.full_like(self.z_bars, float("nan")) for _ in range(3)]
        return replace(
            self, vectors=self.vectors + other.vectors, z_bars=nan[0], z_bars_without=nan[1], norms=nan[2], meta=meta
        )

    def check_model(self, model: Model, *, allow_cross_model: bool = False) -> None:
        """Refuse a model of another width, or another model unless asked for explicitly."""
        d, name = model.cfg.d_model, getattr(getattr(model, "wb_info", None), "name", "?")
        if d != self.d_model:
            raise ValueError(
                f"this vector has width {self.d_model} (from {self.meta.get('model')!r}) but "
                f"{name!r} has d_model {d}. Fix: map it into this model with "
                f"wb.analysis.fit_model_maps(source, target, texts).map_vector(vec, target_acts=<the "
                f"target's PairActivations>), which pairs positions across tokenizers, or use a "
                f"vector derived on this model"
            )
        ours = getattr(getattr(model, "wb_info", None), "weight_hash", None)
        # the name too: tiny-instruct and tiny-base share their random weights (same seed) but
        # not their tokenizer, EOS or prompt format
        same = ours == self.meta.get("weight_hash") and name == self.meta.get("model")
        if not allow_cross_model and not same:
            raise ValueError(
                f"this vector was derived on {self.meta.get('model')!r} (weights "
                f"{str(self.meta.get('weight_hash'))[:12]}) but the model is {name!r} (weights "
                f"{str(ours)[:12]}). Fix: pass allow_cross_model=True to use it on another model"
            )
        if max(self.layers) >= model.cfg.n_layers:
            raise ValueError(
                f"this vector has layer {max(self.layers)} but {name!r} has only {model.cfg.n_layers} layers"
            )

    def save(self, path: str | Path) -> Path:
        """Write `path` (safetensors, metadata embedded; ".safetensors" appended unless the name
        ends with it, so "x.v1" and "x.v2" stay two files) and a JSON sidecar beside it
        ("x.v1.json"). Returns the safetensors path."""
        from safetensors.torch import save_file

        self.check_finite()  # again: the tensors may have been changed in place since
        path = _with_suffix(Path(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = dict(
            vectors=self.vectors,
            layers=torch.tensor(self.layers),
            z_bars=self.z_bars,
            z_bars_without=self.z_bars_without,
            norms=self.norms,
        )
        meta = json.dumps(self.meta, sort_keys=True, default=str)
        tmp = path.with_name(path.name + ".tmp")
        # clones: safetensors refuses tensors that share memory (views of one another)
        save_file(
            {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, tmp, metadata={"workbench": meta}
        )
        tmp.replace(path)
        _sidecar(path).write_text(json.dumps(self.meta, indent=1, sort_keys=True, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path, *, model: Model | None = None, allow_cross_model: bool = False) -> SteeringVector:
        """Read a vector written by `save` (the safetensors file; `x` finds `x.safetensors`).

            vec = wb.SteeringVector.load("lowercase.safetensors", model=model)

        With `model`, refuse a vector of another width, or of another model unless
        `allow_cross_model`. An unreadable or non-finite file raises VectorFileError."""
        from safetensors import safe_open

        path = _existing(Path(path))
        try:
            with safe_open(path, "pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (the handle has keys(), no __iter__)
                meta = json.loads((f.metadata() or {})["workbench"])
            vec = cls(
                tensors["vectors"],
                tuple(int(l) for l in tensors["layers"]),
                tensors["z_bars"],
                tensors["z_bars_without"],
                tensors["norms"],
                meta,
            )
        except Exception as err:  # noqa: BLE001 (any failure to read is reported as one error, with the fix)
            raise VectorFileError(
                f"{path} is not a readable workbench steering vector ({err}). "
                f"Fix: re-derive and save it; the file may be truncated or "
                f"corrupt"
            ) from None
        if model is not None:
            vec.check_model(model, allow_cross_model=allow_cross_model)
        return vec


_SUFFIX = ".safetensors"


def _with_suffix(path: Path) -> Path:
    return path if path.name.endswith(_SUFFIX) else path.with_name(path.name + _SUFFIX)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(_SUFFIX) + ".json")


def _existing(path: Path) -> Path:
    """The file `save(path)` wrote: `path` itself, or with ".safetensors" appended."""
    for candidate in (path, _with_suffix(path)):
        if candidate.is_file():
            return candidate
    old = path.with_suffix(_SUFFIX)  # older saves replaced the suffix: "x.v1" went to x.safetensors
    hint = (
        f"; {old} exists, where an older workbench saved {path.name!r} (and every other "
        f"'{path.stem}.*' name). Fix: load {old} if it is the vector you meant"
        if old.is_file()
        else ""
    )
    raise FileNotFoundError(f"no steering vector at {path}{hint}")


def _equal(a: Tensor, b: Tensor) -> bool:
    """torch.equal with NaN equal to NaN (an unknown z-bar equals an unknown z-bar)."""
    return (
        a.shape == b.shape and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))
    )


def _as_saved(meta: dict[str, Any]) -> Any:
    return json.loads(json.dumps(meta, sort_keys=True, default=str))


def _op(meta: dict[str, Any], op: str) -> dict[str, Any]:
    return {**meta, "operations": [*meta.get("operations", []), op]}
