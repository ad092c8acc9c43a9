"""How well a direction separates with- from without-instruction activations.

In a notebook:

    proj = projection_separation(held_out_acts, vec)        # or (with_acts, without_acts, directions, layers)
    separation(proj)        # layer, auroc, cohens_d, ...
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from einops import rearrange
from jaxtyping import Float
from sklearn.metrics import roc_auc_score
from torch import Tensor

from workbench.analysis._tensors import Pairs, PerLayer, pair_tensors, per_layer_rows, unit
from workbench.cache import PairActivations
from workbench.vectors import SteeringVector

SIDES = ("with", "without")


def projection_separation(
    with_acts: Pairs,
    without_acts: Float[Tensor, "n_pairs n_layers d_model"] | PerLayer | None = None,
    directions: PerLayer | None = None,
    layers: Sequence[int] | None = None,
    *,
    project_out: PerLayer | None = None,
) -> pd.DataFrame:
    """Projection of every activation on the unit direction of its layer.

    `projection_separation(acts, vec)`: a PairActivations and a SteeringVector (or tensor);
    the layers are the activations' (or `layers`), and the vector must have each of them.
    `projection_separation(with_acts, without_acts, directions, layers)`: plain tensors.
    `project_out`: a direction (e.g. the control vector) removed from `directions` first.

    Returns one row per (layer, example, side): columns `layer, example, side, projection`,
    `side` in {"with", "without"}. The mean of the "with" rows at a layer is the paper's z̄.
    """
    if isinstance(with_acts, PairActivations) and directions is None and without_acts is not None:
        directions, without_acts = without_acts, None  # projection_separation(acts, vec)
    if directions is None:
        raise ValueError(
            "projection_separation needs directions: pass (acts, vec) or (with_acts, without_acts, directions, layers)"
        )
    if isinstance(without_acts, SteeringVector):
        raise TypeError("without_acts: expected the without-instruction activations, got a SteeringVector")
    w, wo, layers = pair_tensors(with_acts, without_acts, layers)
    d, _ = per_layer_rows(directions, layers, "directions")
    if project_out is not None:
        from workbench.analysis.controls import remove_direction

        d = remove_direction(d, per_layer_rows(project_out, layers, "project_out")[0])
    if w.shape[-1] != d.shape[-1]:
        raise ValueError(f"directions have width {d.shape[-1]}, activations {w.shape[-1]}")
    if (d.norm(dim=-1) == 0).any():
        raise ValueError("a direction has zero norm; its projections would be meaningless")
    u = unit(d)
    n = w.shape[0]
    frames = []
    for side, acts in zip(SIDES, (w, wo)):
        proj = torch.einsum("nld,ld->nl", acts, u)
        frames.append(
            pd.DataFrame(
                {
                    "layer": np.tile(np.asarray(layers), n),
                    "example": np.repeat(np.arange(n), len(layers)),
                    "side": side,
                    "projection": rearrange(proj, "n l -> (n l)").numpy(),  # example-major, as above
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def separation(df: pd.DataFrame, by: Sequence[str] = ("layer",)) -> pd.DataFrame:
    """Per group, AUROC (with = positive) and Cohen's d (pooled sd) of the projections.

    `df` is the output of `projection_separation` (columns `side`, `projection` plus `by`).
    Returns columns `*by, auroc, cohens_d, mean_with, mean_without, n_with, n_without`.
    Cohen's d is ±inf when both sides have zero spread but different means.
    """
    rows = []
    for key, g in df.groupby(list(by), sort=True):
        pos = g.loc[g["side"] == "with", "projection"].to_numpy(dtype=float)
        neg = g.loc[g["side"] == "without", "projection"].to_numpy(dtype=float)
        if len(pos) == 0 or len(neg) == 0:
            raise ValueError(f"group {key} lacks a 'with' or a 'without' side")
        labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        auroc = roc_auc_score(labels, np.r_[pos, neg])
        rows.append((*key, auroc, _cohens_d(pos, neg), pos.mean(), neg.mean(), len(pos), len(neg)))
    cols = [*by, "auroc", "cohens_d", "mean_with", "mean_without", "n_with", "n_without"]
    return pd.DataFrame(rows, columns=cols)


def _cohens_d(pos: np.ndarray, neg: np.ndarray) -> float:
    dof = len(pos) + len(neg) - 2
    ss = ((pos - pos.mean()) ** 2).sum() + ((neg - neg.mean()) ** 2).sum()
    pooled = np.sqrt(ss / dof) if dof > 0 else np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(pos.mean() - neg.mean()) / pooled)
