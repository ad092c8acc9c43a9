"""Cosine geometry of instruction vectors and of the activations they come from.

    cosine_matrix({"lower": vec1, "json": vec2})             # layer, instruction_a, instruction_b, cosine
    random_cosine_band(d_model=2304)                         # what |cosine| chance alone gives
    split_half_stability(acts)                               # is the mean difference reproducible?
    pairwise_cosine_cases(acts)                              # the paper's three per-layer cases

Each takes the workbench's objects (SteeringVector, PairActivations; their layers are used and
checked) or plain tensors with `layers=`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.stats
import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from workbench.analysis._tensors import PerLayer, common_layers, offdiag_cosines, pair_tensors, per_layer_rows, unit

CASES = ("same_instruction_across_queries", "with_vs_without_same_query", "across_queries")


def cosine_matrix(
    vectors: Mapping[str, PerLayer],
    layers: Sequence[int] | None = None,
    *,
    project_out: PerLayer | None = None,
) -> pd.DataFrame:
    """Cosine between every ordered pair of instruction vectors (diagonal included), per layer.

    `vectors`: name -> SteeringVector (or (n_layers, d) tensor). `layers`: default the layers
    the SteeringVectors share (refused if they differ); needed for plain tensors. A control
    vector (`A.control_vector`) can sit beside the instruction vectors like any other.
    `project_out`: a SteeringVector (or tensor) whose direction is removed from every vector
    first (`A.project_out`), e.g. the control, to compare what is left.

    Returns columns `layer, instruction_a, instruction_b, cosine`; the full square per layer
    so a heatmap is a plain pivot.
    """
    names = list(vectors)
    if not names:
        raise ValueError("cosine_matrix needs at least one vector")
    layers = common_layers([vectors[n] for n in names], layers, names)
    rows = torch.stack([per_layer_rows(vectors[n], layers, n)[0] for n in names])  # (k, L, d)
    if project_out is not None:
        from workbench.analysis.controls import remove_direction

        rows = remove_direction(rows, per_layer_rows(project_out, layers, "project_out")[0])
    u = unit(rows)
    cos = torch.einsum("ald,bld->lab", u, u)
    k, n_layers = len(names), len(layers)
    return pd.DataFrame(
        {
            "layer": np.repeat(np.asarray(layers), k * k),
            "instruction_a": np.tile(np.repeat(names, k), n_layers),
            "instruction_b": np.tile(names, n_layers * k),
            "cosine": rearrange(cos, "l a b -> (l a b)").numpy(),  # the order of the columns above
        }
    )


def random_cosine_band(
    d_model: int, n: int = 1000, q: tuple[float, float] = (0.025, 0.975), seed: int = 0
) -> pd.DataFrame:
    """Quantiles of the cosine between two independent random directions in `d_model` dims.

    One row per `method`:
    - `empirical`: quantiles of `n` seeded Gaussian pairs;
    - `exact`: (1 + cos)/2 ~ Beta((d-1)/2, (d-1)/2) for isotropic directions;
    - `normal`: the large-d approximation z_q / sqrt(d), i.e. ±1.96/sqrt(d) at 95%.
    Columns `method, d_model, q_low, q_high, low, high, n_samples`.

    The band is for *random* directions; real activations are anisotropic, so use it as
    "what chance alone gives", not as a null for activation cosines.
    """
    if d_model < 2:
        raise ValueError("d_model must be at least 2")
    gen = torch.Generator().manual_seed(seed)
    chunks, chunk = [], max(1, 2**22 // d_model)  # keep each draw to ~32 MB
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        a = torch.randn(m, d_model, generator=gen, dtype=torch.float64)
        b = torch.randn(m, d_model, generator=gen, dtype=torch.float64)
        chunks.append(F.cosine_similarity(a, b, dim=-1))
    empirical = np.quantile(torch.cat(chunks).numpy(), q)
    half = (d_model - 1) / 2
    exact = 2 * scipy.stats.beta.ppf(q, half, half) - 1
    normal = scipy.stats.norm.ppf(q) / math.sqrt(d_model)
    rows = [("empirical", *empirical, n), ("exact", *exact, np.nan), ("normal", *normal, np.nan)]
    df = pd.DataFrame(rows, columns=["method", "low", "high", "n_samples"])
    df.insert(1, "d_model", d_model)
    df.insert(2, "q_low", q[0])
    df.insert(3, "q_high", q[1])
    return df


def split_half_stability(
    with_acts: Float[Tensor, "n_pairs n_layers d_model"],
    without_acts: Float[Tensor, "n_pairs n_layers d_model"] | None = None,
    layers: Sequence[int] | None = None,
    n_splits: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """Cosine between mean-difference vectors of two disjoint random halves of the pairs.

    `split_half_stability(acts)` with a PairActivations, or both sides' tensors and `layers`.
    Near 1: the instruction vector at that layer does not depend on which queries were used.
    With an odd pair count one pair sits out of each split. Returns one row per layer:
    `layer, cosine_mean, cosine_std, cosine_min, cosine_max, n_splits, half_size`.
    """
    w, wo, layers = pair_tensors(with_acts, without_acts, layers)
    diffs = w - wo
    half = diffs.shape[0] // 2
    if half < 1 or n_splits < 1:
        raise ValueError("need at least 2 pairs and 1 split")
    gen = torch.Generator().manual_seed(seed)
    cos = torch.empty(n_splits, len(layers))
    for s in range(n_splits):
        perm = torch.randperm(diffs.shape[0], generator=gen)
        a = diffs[perm[:half]].mean(0)
        b = diffs[perm[half : 2 * half]].mean(0)
        cos[s] = F.cosine_similarity(a, b, dim=-1)
    c = cos.numpy()
    return pd.DataFrame(
        {
            "layer": list(layers),
            "cosine_mean": c.mean(0),
            "cosine_std": c.std(0, ddof=1) if n_splits > 1 else np.nan,
            "cosine_min": c.min(0),
            "cosine_max": c.max(0),
            "n_splits": n_splits,
            "half_size": half,
        }
    )


def pairwise_cosine_cases(
    with_acts: Float[Tensor, "n_pairs n_layers d_model"],
    without_acts: Float[Tensor, "n_pairs n_layers d_model"] | None = None,
    layers: Sequence[int] | None = None,
    instruction: str | None = None,
) -> pd.DataFrame:
    """The paper's three per-layer cosine cases, summarised as mean and std over pairs.

    `pairwise_cosine_cases(acts, instruction="title")` with a PairActivations, or both sides'
    tensors and `layers`.

    `case` is one of
    - `same_instruction_across_queries`: per-example differences (with - without) of
      different queries; high means one shared instruction direction;
    - `with_vs_without_same_query`: the two activations of one query;
    - `across_queries`: activations of different queries on the same side (with-with and
      without-without pairs pooled), the baseline set by residual-stream anisotropy.
    Columns `instruction, layer, case, mean, std, n` (`instruction` is just a label, so several
    instructions can be concatenated).
    """
    w, wo, layers = pair_tensors(with_acts, without_acts, layers)
    if w.shape[0] < 2:
        raise ValueError("need at least 2 pairs to compare across queries")
    per_case = {
        CASES[0]: offdiag_cosines(w - wo),
        CASES[1]: F.cosine_similarity(w, wo, dim=-1).T,  # (L, n)
        CASES[2]: torch.cat([offdiag_cosines(w), offdiag_cosines(wo)], dim=1),
    }
    frames = []
    for case, cos in per_case.items():
        c = cos.numpy()
        frames.append(
            pd.DataFrame(
                {
                    "instruction": instruction,
                    "layer": list(layers),
                    "case": case,
                    "mean": c.mean(1),
                    "std": c.std(1, ddof=1),
                    "n": c.shape[1],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
