"""Comparing instruction vectors across models, and tabulating cross-model steering results.

In a notebook:

    cross_model_cosine(it_vecs, base_vecs, layers)        # same width: IT vs base
    matched_layers(26, 42)                                # [LayerPair(source=0, target=0), ..., (25, 41)]
    target_matched_layers(26, 42)                         # one pair per target layer
    compare_mapped(m.apply_direction(src_vecs), own_vecs, tgt_layers)
    cross_application_matrix(results)                     # vector_source x target_model
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch.nn.functional as F

from workbench.analysis._tensors import PerLayer, common_layers, per_layer_rows
from workbench.types import LayerPair


def _per_layer_cosine(first: PerLayer, second: PerLayer, layers: Sequence[int] | None) -> pd.DataFrame:
    layers = common_layers([first, second], layers, ["first", "second"])
    (a, _), (b, _) = per_layer_rows(first, layers, "first"), per_layer_rows(second, layers, "second")
    if a.shape != b.shape:
        raise ValueError(f"widths differ ({a.shape[-1]} vs {b.shape[-1]}); map one side first")
    return pd.DataFrame(
        {
            "layer": list(layers),
            "cosine": F.cosine_similarity(a, b, dim=-1).numpy(),
            "norm_ratio": (a.norm(dim=-1) / b.norm(dim=-1)).numpy(),
        }
    )


def cross_model_cosine(
    vecs_a: PerLayer,
    vecs_b: PerLayer,
    layers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Per-layer cosine between two models' vectors of equal width (e.g. IT vs base):
    SteeringVectors (over the same layers, or `layers` both have) or tensors with `layers`.

    Columns `layer, cosine, norm_ratio` (|a| / |b|; matters for `add` steering weights).
    """
    return _per_layer_cosine(vecs_a, vecs_b, layers)


def compare_mapped(
    mapped: PerLayer,
    own: PerLayer,
    layers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Per-layer cosine between vectors mapped in from another model and the target's own.

    `layers` are target-model layers; row i of `mapped` must come from the source layer
    paired with `layers[i]` (see `matched_layers`). Columns `layer, cosine, norm_ratio`
    (|mapped| / |own|).
    """
    return _per_layer_cosine(mapped, own, layers)


def matched_layers(n_layers_src: int, n_layers_tgt: int) -> list[LayerPair]:
    """Pair every source layer with the target layer at the nearest relative depth.

    Depth of layer i is i / (n - 1), so first pairs with first and last with last; ties
    round up. A one-layer model's only layer counts as its last.
    """
    if n_layers_src < 1 or n_layers_tgt < 1:
        raise ValueError("layer counts must be positive")
    if n_layers_src == 1:
        return [LayerPair(0, n_layers_tgt - 1)]
    # integer form of round(i * (n_tgt - 1) / (n_src - 1)), free of float ties
    span_src, span_tgt = n_layers_src - 1, n_layers_tgt - 1
    return [LayerPair(i, (2 * i * span_tgt + span_src) // (2 * span_src)) for i in range(n_layers_src)]


def target_matched_layers(n_layers_src: int, n_layers_tgt: int) -> list[LayerPair]:
    """Pair every target layer with the source layer at the nearest relative depth (the pairs
    a vector is carried along: one per target layer), in target order."""
    return [LayerPair(source=p.target, target=p.source) for p in matched_layers(n_layers_tgt, n_layers_src)]


def cross_application_matrix(records: pd.DataFrame, value: str = "accuracy") -> pd.DataFrame:
    """Pivot a tidy results table into a vector_source x target_model matrix.

    Input contract: one row per (vector_source, target_model) with a numeric `value`
    column, e.g. `vector_source` in {"none", "own", "gemma-2-2b-it"} and `target_model` the
    model steered. Aggregate per-prompt rows first (e.g. `groupby(...).correct.mean()`);
    duplicates raise rather than being silently averaged. Rows and columns keep their
    order of first appearance. This is the one wide (non-tidy) output, meant for display.
    """
    missing = {"vector_source", "target_model", value} - set(records.columns)
    if missing:
        raise ValueError(f"records lacks columns {sorted(missing)}")
    dup = records.duplicated(["vector_source", "target_model"])
    if dup.any():
        pairs = records.loc[dup, ["vector_source", "target_model"]].drop_duplicates().values.tolist()
        raise ValueError(f"several rows for (vector_source, target_model) {pairs}; aggregate first")
    matrix = records.pivot(index="vector_source", columns="target_model", values=value)
    return matrix.reindex(index=records["vector_source"].unique(), columns=records["target_model"].unique())
