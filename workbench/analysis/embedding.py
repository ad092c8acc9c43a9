"""2-D embeddings of per-example difference vectors (the paper's t-SNE figure).

In a notebook:

    difference_embedding({"title": acts1, "json": acts2}, layer=12, method="tsne")   # x, y, label, example
    difference_embedding(diffs, labels, method="tsne")    # diffs = with_acts[:, slot] - without_acts[:, slot]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits
from torch import Tensor

from workbench.analysis._tensors import as_float, pair_tensors
from workbench.cache import PairActivations

EMBEDDING_METHODS = ("pca", "tsne")


def difference_embedding(
    diffs: Float[Tensor, "n d"] | PairActivations | Mapping[str, PairActivations],
    labels: Sequence[str] | str | None = None,
    method: str = "pca",
    seed: int = 0,
    perplexity: float = 30.0,
    *,
    layer: int | None = None,
) -> pd.DataFrame:
    """Embed difference vectors in 2-D with PCA or t-SNE; columns `x, y, label, example`.

    `diffs`: a (n, d) tensor with one label each; or a PairActivations (label: its instruction
    id unless `labels` names one) or a mapping label -> PairActivations, with `layer=` (each
    must have it): the per-example differences (with - without) at that layer. `example` is
    the row's index within its own PairActivations.

    t-SNE's perplexity is clipped to (n - 1) / 3 (at least 1): sklearn needs it below n, and
    its neighbour search uses 3 * perplexity points.
    """
    examples = None
    if isinstance(diffs, (PairActivations, Mapping)):
        diffs, labels, examples = _differences(diffs, labels, layer)
    elif labels is None:
        raise ValueError("a tensor of differences needs labels=, one per row")
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
        raise ValueError(f"method must be one of {EMBEDDING_METHODS}, got {method!r}")
    examples = np.arange(len(labels)) if examples is None else examples
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "label": labels, "example": examples})


def _differences(
    acts: PairActivations | Mapping[str, PairActivations], labels: Sequence[str] | str | None, layer: int | None
) -> tuple[Float[Tensor, "n d"], list[str], np.ndarray]:
    if layer is None:
        raise ValueError("pass layer= (the model layer whose differences to embed)")
    if isinstance(acts, PairActivations):
        name = labels if isinstance(labels, str) else (acts.pairs[0].instruction_id or "pairs")
        acts = {name: acts}
    elif labels is not None:
        raise ValueError("labels come from the mapping's keys; leave labels out")
    parts, names, examples = [], [], []
    for name, a in acts.items():
        w, wo, _ = pair_tensors(a, layers=[layer], name=f"activations {name!r}")
        parts.append((w - wo)[:, 0])
        names += [name] * len(w)
        examples.append(np.arange(len(w)))
    return torch.cat(parts), names, np.concatenate(examples)
