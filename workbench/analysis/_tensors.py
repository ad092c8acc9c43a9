"""Shape checks and small tensor helpers shared by the analysis modules."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


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


def offdiag_cosines(x: Tensor) -> Tensor:
    """(n, L, d) -> (L, n*(n-1)/2): cosine of every unordered pair of rows, per layer."""
    u = unit(x)
    gram = torch.einsum("ild,jld->lij", u, u)
    i, j = torch.triu_indices(x.shape[0], x.shape[0], offset=1)
    return gram[:, i, j]
