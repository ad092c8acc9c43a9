"""Heatmaps: instruction-vector cosines and the cross-model transfer matrix.

In a notebook:

    cosine_heatmap(cosine_matrix(vectors, layers), layer=12)
    cosine_heatmap_by_layer(cosine_matrix(vectors, layers))     # slider over layers
    transfer_matrix(cross_application_matrix(results))
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from workbench.plots._common import TEMPLATE, in_order, require_columns

_COSINE_STYLE = dict(zmin=-1, zmax=1, colorscale="RdBu_r", texttemplate="%{z:.2f}", colorbar=dict(title="cosine"))


def _cosine_square(df: pd.DataFrame, layer: int) -> pd.DataFrame:
    rows = df[df["layer"] == layer]
    if rows.empty:
        raise ValueError(f"no rows for layer {layer}; layers present: {sorted(df['layer'].unique())}")
    names = in_order(df["instruction_a"])
    return rows.pivot(index="instruction_a", columns="instruction_b", values="cosine").reindex(
        index=names, columns=names
    )


def _square_layout(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=title)
    fig.update_yaxes(autorange="reversed")  # diagonal from top-left, like a printed matrix
    return fig


def cosine_heatmap(df: pd.DataFrame, layer: int) -> go.Figure:
    """Instruction x instruction cosine at one layer (input: `cosine_matrix`). One Heatmap trace."""
    require_columns(df, ["layer", "instruction_a", "instruction_b", "cosine"], "cosine_heatmap")
    square = _cosine_square(df, layer)
    fig = go.Figure(
        go.Heatmap(
            z=square.to_numpy(), x=list(square.columns), y=list(square.index), name=f"layer {layer}", **_COSINE_STYLE
        )
    )
    return _square_layout(fig, f"Cosine between instruction vectors, layer {layer}")


def cosine_heatmap_by_layer(df: pd.DataFrame) -> go.Figure:
    """The same heatmap with a slider over every layer in `df` (one trace, one frame per layer)."""
    require_columns(df, ["layer", "instruction_a", "instruction_b", "cosine"], "cosine_heatmap_by_layer")
    layers = sorted(df["layer"].unique())
    squares = {layer: _cosine_square(df, layer) for layer in layers}
    first = squares[layers[0]]
    fig = go.Figure(
        go.Heatmap(z=first.to_numpy(), x=list(first.columns), y=list(first.index), **_COSINE_STYLE),
        frames=[go.Frame(data=[go.Heatmap(z=squares[layer].to_numpy())], name=str(layer)) for layer in layers],
    )
    steps = [
        dict(
            method="animate",
            label=str(layer),
            args=[[str(layer)], dict(mode="immediate", frame=dict(duration=0, redraw=True))],
        )
        for layer in layers
    ]
    fig.update_layout(sliders=[dict(active=0, currentvalue=dict(prefix="layer "), steps=steps)])
    return _square_layout(fig, "Cosine between instruction vectors")


def transfer_matrix(df: pd.DataFrame, value: str = "accuracy") -> go.Figure:
    """Heatmap of a vector_source x target_model matrix (input: `cross_application_matrix`).

    One Heatmap trace, colour scale fixed to [0, 1] so figures compare across runs.
    """
    fig = go.Figure(
        go.Heatmap(
            z=df.to_numpy(dtype=float),
            x=[str(c) for c in df.columns],
            y=[str(i) for i in df.index],
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            texttemplate="%{z:.3f}",
            colorbar=dict(title=value),
        )
    )
    fig.update_xaxes(title_text="target model")
    fig.update_yaxes(title_text="vector source")
    return _square_layout(fig, f"Cross-model steering ({value})")
