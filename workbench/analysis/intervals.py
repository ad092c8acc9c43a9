"""Bootstrap intervals over pairs: per-layer cosines between vectors, AUROC and Cohen's d.

    A.bootstrap_cosines({"title": acts, "json": acts2, "control": ctrl_acts}, n_boot=1000)
    A.separation_intervals(A.projection_separation(held_out, vec), n_boot=1000)

Percentile intervals from a seeded resampling of pairs with replacement (one draw of pair
indices serves every layer, so a layer's interval and its neighbours' come from the same
resamples). The resampling is vectorised: each bootstrap sample is a vector of counts per pair,
and a resampled mean is a matrix product.

What is resampled, and what is not:
- `bootstrap_cosines` re-derives each mean-difference vector from resampled pairs of its own
  set (sets are resampled independently), so the interval covers which pairs were drawn.
- `separation_intervals` keeps the direction fixed and resamples the pairs projected on it:
  use held-out pairs, so the interval is about new requests, not the direction's fit.
Neither covers the choice of phrasings, model seed or prompt template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from workbench.analysis._tensors import pair_tensors, unit
from workbench.analysis.projection import separation
from workbench.cache import PairActivations


def _counts(gen: torch.Generator, n_boot: int, n: int) -> Tensor:
    """(n_boot, n) counts of each of n items in a resample of size n with replacement."""
    idx = torch.randint(n, (n_boot, n), generator=gen)
    return torch.zeros(n_boot, n).scatter_add_(1, idx, torch.ones(n_boot, n))


INTERVAL_METHODS = ("basic", "percentile")


def _bounds(
    samples: np.ndarray, ci: float, method: str = "percentile", point: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval (quantiles of the replicates), or basic (the quantiles reflected
    about the point estimate: [2p - q_high, 2p - q_low])."""
    alpha = (1 - ci) / 2
    low, high = np.nanquantile(samples, alpha, axis=0), np.nanquantile(samples, 1 - alpha, axis=0)
    if method == "percentile":
        return low, high
    if method == "basic" and point is not None:
        return 2 * point - high, 2 * point - low
    raise ValueError(f"method must be one of {INTERVAL_METHODS}, got {method!r}")


def bootstrap_cosines(
    acts: Mapping[str, PairActivations | tuple[Tensor, Tensor]],
    layers: Sequence[int] | None = None,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    method: str = "basic",
    chunk: int = 200,
) -> pd.DataFrame:
    """Per-layer cosine between the mean-difference vectors of every two pair sets, with a
    bootstrap interval over pairs.

    `acts`: name -> PairActivations (or a (with, without) tuple of tensors, then `layers` is
    needed). `layers`: default the layers all PairActivations have (refused if they differ).
    Returns columns `layer, instruction_a, instruction_b, cosine, ci_low, ci_high, n_boot`, one
    row per unordered pair (a before b in the mapping's order) and layer; `cosine` uses all pairs.

    Why `method="basic"`: the noise in a mean of n differences pulls the cosine of two means
    towards 0, and a resample (with its repeated pairs) pulls it further, so the percentile
    interval sits too close to 0 and can miss the point estimate itself. The basic interval
    reflects that shift, so it can lie beyond the estimate, away from 0 (it is an interval for
    the cosine of the directions the pairs are drawn around, which the estimate understates).
    It corrects only part of the pull when the signal is weak: when the split-half cosine
    (`split_half_stability`) is well below 1, read the cosine as a lower bound on |cosine|.
    The bounds are clipped to [-1, 1].
    """
    names = list(acts)
    if len(names) < 2:
        raise ValueError("bootstrap_cosines needs at least two pair sets")
    if not 0 < ci < 1 or n_boot < 1:
        raise ValueError("ci must be in (0, 1) and n_boot at least 1")
    layers = _shared_layers(acts, layers)
    diffs = {}
    for name in names:
        a = acts[name]
        if isinstance(a, tuple):
            w, wo, _ = pair_tensors(a[0], a[1], layers, name=name)
        else:
            w, wo, _ = pair_tensors(a, layers=layers, name=name)
        diffs[name] = (w - wo).double()  # (n, L, d); double: sums of many counts stay exact
    gen = torch.Generator().manual_seed(seed)
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    samples: dict[tuple[int, int], list[Tensor]] = {p: [] for p in pairs}
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        means = []
        for name in names:
            d = diffs[name]
            counts = _counts(gen, b, d.shape[0]).double()
            means.append(unit(torch.einsum("bn,nld->bld", counts, d)))
        for i, j in pairs:
            samples[(i, j)].append(torch.einsum("bld,bld->bl", means[i], means[j]))
    rows = []
    for i, j in pairs:
        point = torch.einsum("ld,ld->l", unit(diffs[names[i]].mean(0)), unit(diffs[names[j]].mean(0))).numpy()
        low, high = np.clip(_bounds(torch.cat(samples[(i, j)]).numpy(), ci, method, point), -1, 1)
        rows.append(
            pd.DataFrame(
                dict(
                    layer=layers,
                    instruction_a=names[i],
                    instruction_b=names[j],
                    cosine=point,
                    ci_low=low,
                    ci_high=high,
                    n_boot=n_boot,
                )
            )
        )
    return pd.concat(rows, ignore_index=True)


def _shared_layers(
    acts: Mapping[str, PairActivations | tuple[Tensor, Tensor]], layers: Sequence[int] | None
) -> list[int]:
    if layers is not None:
        return [int(l) for l in layers]
    own = {name: tuple(a.layers) for name, a in acts.items() if isinstance(a, PairActivations)}
    if not own:
        raise ValueError("tensor pairs need layers=")
    if len(set(own.values())) > 1:
        raise ValueError(f"the pair sets cover different layers ({own}). Fix: pass layers= that all have")
    return list(next(iter(own.values())))


def separation_intervals(
    df: pd.DataFrame,
    by: Sequence[str] = ("layer",),
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> pd.DataFrame:
    """`separation(df, by)` (AUROC and Cohen's d per group) with bootstrap intervals.

    `df`: `projection_separation` output (columns `example, side, projection` plus `by`). When
    each example has both sides (pairs), pairs are resampled whole; otherwise each side is
    resampled on its own. The same resampled pairs serve every group with the same examples.
    Adds columns `auroc_low, auroc_high, cohens_d_low, cohens_d_high, n_boot`. Percentile
    intervals by default (`method="basic"` for reflected ones); AUROC bounds stay in [0, 1].
    """
    if not 0 < ci < 1 or n_boot < 1:
        raise ValueError("ci must be in (0, 1) and n_boot at least 1")
    point = separation(df, by=by)
    points = {
        key: (auroc, d)
        for key, auroc, d in zip(point[list(by)].itertuples(index=False, name=None), point["auroc"], point["cohens_d"])
    }
    extra = []
    for key, g in df.groupby(list(by), sort=True):
        pos = g[g["side"] == "with"].sort_values("example")
        neg = g[g["side"] == "without"].sort_values("example")
        gen = torch.Generator().manual_seed(seed)  # every group resamples alike: intervals line up
        paired = "example" in g and pos["example"].tolist() == neg["example"].tolist()
        cp = _counts(gen, n_boot, len(pos)).numpy()
        cn = cp if paired else _counts(gen, n_boot, len(neg)).numpy()
        auroc, d = _weighted_auroc_d(pos["projection"].to_numpy(float), neg["projection"].to_numpy(float), cp, cn)
        at = np.asarray(points[key if isinstance(key, tuple) else (key,)], dtype=float)
        (a_lo, d_lo), (a_hi, d_hi) = _bounds(np.stack([auroc, d], 1), ci, method, at)
        a_lo, a_hi = max(a_lo, 0.0), min(a_hi, 1.0)
        extra.append((*(key if isinstance(key, tuple) else (key,)), a_lo, a_hi, d_lo, d_hi))
    cols = [*by, "auroc_low", "auroc_high", "cohens_d_low", "cohens_d_high"]
    out = point.merge(pd.DataFrame(extra, columns=cols), on=list(by))
    out["n_boot"] = n_boot
    return out


def _weighted_auroc_d(
    pos: np.ndarray, neg: np.ndarray, cp: np.ndarray, cn: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and Cohen's d of each bootstrap sample, given as counts per item of each side."""
    above = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # (n, m)
    np_, nn = cp.sum(1), cn.sum(1)
    auroc = np.einsum("bi,ij,bj->b", cp, above, cn) / (np_ * nn)
    mp, mn = cp @ pos / np_, cn @ neg / nn
    ss = (cp * (pos[None] - mp[:, None]) ** 2).sum(1) + (cn * (neg[None] - mn[:, None]) ** 2).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (mp - mn) / np.sqrt(ss / (np_ + nn - 2))
    return auroc, d
