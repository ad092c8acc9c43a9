"""2-D embeddings of per-example difference vectors (the paper's t-SNE figure).

    diffs = with_acts[:, slot] - without_acts[:, slot]
    difference_embedding(diffs, labels, method="tsne")    # x, y, label, example
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from jaxtyping import Float
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits
from torch import Tensor

from workbench.analysis._tensors import as_float

METHODS = ("pca", "tsne")


def difference_embedding(
    diffs: Float[Tensor, "n d"],
    labels: Sequence[str],
    method: str = "pca",
    seed: int = 0,
    perplexity: float = 30.0,
) -> pd.DataFrame:
    """Embed difference vectors in 2-D with PCA or t-SNE; columns `x, y, label, example`.

    t-SNE's perplexity is clipped to (n - 1) / 3 (at least 1): sklearn needs it below n, and
    its neighbour search uses 3 * perplexity points.
    """
    x = as_float(diffs).numpy().astype(np.float64)
    labels = list(labels)
    if x.ndim != 2 or x.shape[0] != len(labels):
        raise ValueError(f"expected (n, d) diffs with n = len(labels) = {len(labels)}, got {x.shape}")
    if x.shape[0] < 3:
        raise ValueError("need at least 3 points to embed")
    if method == "pca":
        xy = PCA(n_components=2, random_state=seed).fit_transform(x)
    elif method == "tsne":
        p = min(perplexity, max(1.0, (x.shape[0] - 1) / 3))
        # One thread: for the few hundred points embedded here, OpenMP threads gain little and,
        # beside a busy process (e.g. a model generating), spin-wait 100x slower (measured 17 s vs 0.1 s).
        with threadpool_limits(limits=1):
            xy = TSNE(n_components=2, perplexity=p, init="pca", random_state=seed).fit_transform(x)
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "label": labels, "example": np.arange(len(labels))})
