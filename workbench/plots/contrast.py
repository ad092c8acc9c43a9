"""Detecting an instruction is not following it: separation and steering effect over one layer axis.

In a notebook:

    P.detect_vs_steer(A.separation_intervals(A.projection_separation(held_out, vec)), sweep,
                      references=refs)
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.plots._common import TEMPLATE, color, require_columns

_LABELS = {"cohens_d": "Cohen's d", "auroc": "AUROC"}


def _bars(df: pd.DataFrame, col: str, low: str, high: str) -> dict[str, Any] | None:
    if not {low, high} <= set(df.columns):
        return None
    return dict(type="data", array=df[high] - df[col], arrayminus=df[col] - df[low], thickness=1)


def _star(fig: go.Figure, df: pd.DataFrame, column: str, name: str, colour: int, *, row: int) -> pd.Series:
    """Star the row of `df` with the largest `column` (the first of equal maxima) in panel `row`,
    named "<name>: L<layer>" in the legend; returns that row."""
    best = df.sort_values(column, ascending=False, kind="stable").iloc[0]
    marker = dict(symbol="star", size=16, color=color(colour), line=dict(color="black", width=1))
    trace = go.Scatter(
        x=[best["layer"]], y=[best[column]], mode="markers", name=f"{name}: L{int(best['layer'])}", marker=marker
    )
    fig.add_trace(trace, row=row, col=1)
    return best


def detect_vs_steer(
    separation: pd.DataFrame,
    steering: pd.DataFrame,
    *,
    detect: str = "cohens_d",
    value: str = "accuracy",
    fluency: str | None = "degenerate",
    references: pd.DataFrame | None = None,
    title: str | None = None,
) -> go.Figure:
    """Top: how well the direction separates with- from without-instruction activations per
    layer (`separation` or `separation_intervals`; `detect` is "cohens_d" or "auroc"). Middle:
    what steering at that layer does (`steering`: columns `layer, <value>`, optional
    `ci_low, ci_high`; a row with a missing layer is no steering, drawn dashed). Bottom: the
    `fluency` column of `steering` (e.g. the degenerate share), when present.

    The best layer of each panel is starred and named in the legend, so a best-separating
    layer that does nothing when steered shows at a glance. `references`: further horizontal
    lines in the steering panel (columns `reference, <value>`, e.g. "instruction in prompt").
    Traces: "<detect>", "best separating: L<l>", "<value>", "no steering", "best steering: L<l>",
    then the fluency traces, then the references.
    """
    require_columns(separation, ["layer", detect], "detect_vs_steer separation")
    require_columns(steering, ["layer", value], "detect_vs_steer steering")
    flu = fluency if fluency and fluency in steering.columns else None
    rows = 3 if flu else 2
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        row_heights=[0.38, 0.42, 0.2][:rows] if flu else [0.45, 0.55],
    )
    sep = separation.sort_values("layer")
    fig.add_trace(
        go.Scatter(
            x=sep["layer"],
            y=sep[detect],
            mode="lines+markers",
            name=_LABELS.get(detect, detect),
            line=dict(color=color(0)),
            error_y=_bars(sep, detect, f"{detect}_low", f"{detect}_high"),
        ),
        row=1,
        col=1,
    )
    best_sep = _star(fig, sep, detect, "best separating", 0, row=1)
    steered = steering[steering["layer"].notna()].sort_values("layer")
    x_range = [min(steered["layer"].min(), sep["layer"].min()), max(steered["layer"].max(), sep["layer"].max())]
    fig.add_trace(
        go.Scatter(
            x=steered["layer"],
            y=steered[value],
            mode="lines+markers",
            name=f"steered: {value}",
            line=dict(color=color(1)),
            error_y=_bars(steered, value, "ci_low", "ci_high"),
        ),
        row=2,
        col=1,
    )
    base = steering[steering["layer"].isna()]
    if len(base) > 1:
        raise ValueError("detect_vs_steer: more than one no-steering row")
    if len(base) == 1:
        fig.add_trace(
            go.Scatter(
                x=x_range,
                y=[base[value].item()] * 2,
                mode="lines",
                name="no steering",
                line=dict(color=color(1), dash="dash"),
            ),
            row=2,
            col=1,
        )
    best = _star(fig, steered, value, "best steering", 1, row=2)
    if flu:
        fig.add_trace(
            go.Scatter(
                x=steered["layer"],
                y=steered[flu],
                mode="lines+markers",
                name=f"steered: {flu}",
                line=dict(color=color(3), width=1.5),
                marker=dict(size=5),
            ),
            row=3,
            col=1,
        )
        if len(base) == 1:
            fig.add_trace(
                go.Scatter(
                    x=x_range,
                    y=[base[flu].item()] * 2,
                    mode="lines",
                    name=f"no steering: {flu}",
                    line=dict(color=color(3), dash="dash", width=1.5),
                    showlegend=False,
                ),
                row=3,
                col=1,
            )
        fig.update_yaxes(title_text=flu, range=[-0.05, 1.05], nticks=3, row=3, col=1)
    if references is not None:
        require_columns(references, ["reference", value], "detect_vs_steer references")
        for j, ref in enumerate(references.itertuples(index=False)):
            fig.add_trace(
                go.Scatter(
                    x=x_range,
                    y=[getattr(ref, value)] * 2,
                    mode="lines",
                    name=str(ref.reference),
                    line=dict(color="rgb(90,90,90)", dash=("dot", "dashdot")[j % 2], width=2),
                ),
                row=2,
                col=1,
            )
    for layer, c in ((best_sep["layer"], color(0)), (best["layer"], color(1))):
        fig.add_vline(x=layer, line=dict(color=c, dash="dot", width=1))
    fig.update_yaxes(title_text=_LABELS.get(detect, detect), row=1, col=1)
    if detect == "auroc":
        fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(
        title_text=value, range=[-0.05, 1.05] if steering[value].between(0, 1).all() else None, row=2, col=1
    )
    fig.update_xaxes(title_text="layer", row=rows, col=1)
    fig.update_layout(
        template=TEMPLATE,
        height=620 if flu else 520,
        title=title or "Detecting the instruction (top) is not steering with it (below)",
    )
    return fig
