"""A linear map between two models' residual streams, fitted on paired activations.

In a notebook:

    m = fit_linear_map(src_acts, tgt_acts, method="ridge", alpha=10.0)   # same prompts, both models
    m.r2_heldout                    # variance of held-out target activations explained
    m.apply_direction(vec_src)      # an instruction vector carried into the target space
    save_linear_map(m, "maps/2b_to_9b_l12"); load_linear_map("maps/2b_to_9b_l12")
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from torch import Tensor

MAP_METHODS = ("ridge", "procrustes")
FORMAT = "workbench.LinearMap/1"


@dataclass(frozen=True, eq=False)
class LinearMap:
    """y ≈ x @ weight + bias, from a source width to a target width.

    Fitted on a random (1 - test_fraction) share of the pairs; `r2_heldout` is the
    variance-weighted R² on the rest (NaN when nothing was held out). `provenance` holds
    free-form strings/numbers such as model names and layers; set it with
    `dataclasses.replace(m, provenance={...})`.
    """

    method: str
    weight: Tensor  # (d_src, d_tgt)
    bias: Tensor  # (d_tgt,)
    r2_heldout: float
    n_train: int
    n_test: int
    alpha: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def d_src(self) -> int:
        return self.weight.shape[0]

    @property
    def d_tgt(self) -> int:
        return self.weight.shape[1]

    def apply(self, x: Float[Tensor, "... d_src"]) -> Float[Tensor, "... d_tgt"]:
        """Map activations (points): linear part plus bias."""
        return self.apply_direction(x) + self.bias.to(x.device, x.dtype)

    def apply_direction(self, v: Float[Tensor, "... d_src"]) -> Float[Tensor, "... d_tgt"]:
        """Map directions (differences of points), where the bias cancels."""
        if v.shape[-1] != self.d_src:
            raise ValueError(f"expected width {self.d_src}, got {v.shape[-1]}")
        return v @ self.weight.to(v.device, v.dtype)


def fit_linear_map(
    source: Float[Tensor, "n d_src"],
    target: Float[Tensor, "n d_tgt"],
    method: str = "ridge",
    alpha: float = 1.0,
    test_fraction: float = 0.2,
    seed: int = 0,
    groups: Tensor | np.ndarray | None = None,
) -> LinearMap:
    """Fit a map from paired source/target activations (row i of both = the same prompt).

    - `ridge`: sklearn Ridge with intercept; `alpha` is its L2 penalty.
    - `procrustes`: centre both sides, then W = s · U Vᵀ from the SVD U S Vᵀ of the
      cross-covariance XᵀY, with the least-squares scalar s. For equal widths this is
      scipy's orthogonal_procrustes (a rotation) plus a global scale; for different widths
      U Vᵀ is the semi-orthogonal matrix maximising tr(Wᵀ XᵀY): an isometric embedding
      when d_src <= d_tgt (then it is the exact least-squares solution), a projection
      otherwise. Angles between mapped directions are preserved when d_src <= d_tgt.
      `alpha` is ignored.

    `groups` (one label per row, e.g. the text a position came from): hold out whole groups, a
    `test_fraction` share of them, so correlated rows never sit on both sides of the split.
    """
    x = source.detach().cpu().double().numpy()
    y = target.detach().cpu().double().numpy()
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"expected paired (n, d) matrices, got {x.shape} and {y.shape}")
    if not 0 <= test_fraction < 1:
        raise ValueError("test_fraction must be in [0, 1)")
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        n_test = round(n * test_fraction)
        train, test = perm[n_test:], perm[:n_test]
    else:
        labels = np.asarray(groups)
        if labels.shape != (n,):
            raise ValueError(f"groups must give one label per row ({n}), got shape {labels.shape}")
        unique = rng.permutation(np.unique(labels))
        held = np.isin(labels, unique[: round(len(unique) * test_fraction)])
        train, test = np.flatnonzero(~held), np.flatnonzero(held)
        n_test = len(test)
    if len(train) < 2:
        raise ValueError(f"{n} pairs leave fewer than 2 to fit on")

    if method == "ridge":
        model = Ridge(alpha=alpha).fit(x[train], y[train])
        w, b = model.coef_.T, model.intercept_
    elif method == "procrustes":
        w, b = _procrustes(x[train], y[train])
    else:
        raise ValueError(f"method must be one of {MAP_METHODS}, got {method!r}")

    r2 = float(r2_score(y[test], x[test] @ w + b, multioutput="variance_weighted")) if n_test >= 2 else math.nan
    return LinearMap(
        method=method,
        weight=torch.from_numpy(np.ascontiguousarray(w)).float(),
        bias=torch.from_numpy(np.ascontiguousarray(b)).float(),
        r2_heldout=r2,
        n_train=len(train),
        n_test=n_test,
        alpha=alpha if method == "ridge" else None,
    )


def _procrustes(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    # torch's LAPACK: 3x numpy's OpenBLAS here on a 576 x 640 cross-covariance
    u, _, vt = torch.linalg.svd(torch.from_numpy(xc.T @ yc), full_matrices=False)  # (d_src, k), (k, d_tgt)
    w = (u @ vt).numpy()
    xw = xc @ w
    scale = float((xw * yc).sum() / (xw * xw).sum())
    w = scale * w
    return w, my - mx @ w


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_linear_map(m: LinearMap, path: str | Path) -> Path:
    """Write `<path>.safetensors` (weight, bias) and `<path>.json` (everything else)."""
    tensors_path, json_path = _paths(path)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"weight": m.weight.contiguous(), "bias": m.bias.contiguous()}, str(tensors_path))
    meta = {
        "format": FORMAT,
        "method": m.method,
        "d_src": m.d_src,
        "d_tgt": m.d_tgt,
        "r2_heldout": None if math.isnan(m.r2_heldout) else m.r2_heldout,
        "n_train": m.n_train,
        "n_test": m.n_test,
        "alpha": m.alpha,
        "provenance": m.provenance,
    }
    json_path.write_text(json.dumps(meta, indent=2) + "\n")
    return tensors_path


def load_linear_map(path: str | Path) -> LinearMap:
    """Read a map written by `save_linear_map`; refuses files whose shapes disagree with the sidecar."""
    tensors_path, json_path = _paths(path)
    meta = json.loads(json_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{json_path} is not a {FORMAT} sidecar (format={meta.get('format')!r})")
    t = load_file(str(tensors_path))
    if tuple(t["weight"].shape) != (meta["d_src"], meta["d_tgt"]) or tuple(t["bias"].shape) != (meta["d_tgt"],):
        raise ValueError(f"{tensors_path} shapes do not match {json_path}")
    r2 = meta["r2_heldout"]
    return LinearMap(
        method=meta["method"],
        weight=t["weight"],
        bias=t["bias"],
        r2_heldout=math.nan if r2 is None else float(r2),
        n_train=meta["n_train"],
        n_test=meta["n_test"],
        alpha=meta["alpha"],
        provenance=meta["provenance"],
    )
