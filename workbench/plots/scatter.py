"""Scatter and bar figures.

In a notebook:

    embedding_scatter(difference_embedding(diffs, labels, method="tsne"))
    two_by_two_bars(summary)     # instruction in prompt x steered
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from workbench.plots._common import TEMPLATE, color, in_order, require_columns


def embedding_scatter(df: pd.DataFrame, title: str = "Difference vectors") -> go.Figure:
    """One marker trace per `label` (input: `difference_embedding`: columns x, y, label)."""
    require_columns(df, ["x", "y", "label"], "embedding_scatter")
    fig = go.Figure()
    for i, label in enumerate(in_order(df["label"])):
        g = df[df["label"] == label]
        fig.add_trace(
            go.Scatter(
                x=g["x"],
                y=g["y"],
                mode="markers",
                name=str(label),
                marker=dict(color=color(i), size=7),
                customdata=g.get("example", None),
                hovertemplate="%{customdata}<extra>%{fullData.name}</extra>" if "example" in g else None,
            )
        )
    fig.update_layout(template=TEMPLATE, title=title, xaxis_title="dim 1", yaxis_title="dim 2")
    return fig


def two_by_two_bars(df: pd.DataFrame) -> go.Figure:
    """Accuracy for the 2 x 2 of instruction in prompt x steered, with CI error bars.

    Input: exactly one row per (instruction_in_prompt, steered) with columns
    `instruction_in_prompt` (bool), `steered` (bool), `accuracy`, `ci_low`, `ci_high`.
    Traces: "plain" and "steered", each with bars at "no instruction" / "instruction in prompt".
    """
    cols = ["instruction_in_prompt", "steered", "accuracy", "ci_low", "ci_high"]
    require_columns(df, cols, "two_by_two_bars")
    if df.duplicated(["instruction_in_prompt", "steered"]).any():
        raise ValueError("two_by_two_bars: more than one row for an (instruction_in_prompt, steered) cell")
    groups = {False: "no instruction", True: "instruction in prompt"}
    fig = go.Figure()
    for i, (steered, name) in enumerate(((False, "plain"), (True, "steered"))):
        d = df[df["steered"] == steered].set_index("instruction_in_prompt").reindex([False, True])
        fig.add_trace(
            go.Bar(
                x=[groups[k] for k in d.index],
                y=d["accuracy"],
                name=name,
                marker_color=color(i),
                error_y=dict(type="data", array=d["ci_high"] - d["accuracy"], arrayminus=d["accuracy"] - d["ci_low"]),
                # labels at the bar's foot keep clear of the error bar
                texttemplate="%{y:.3f}",
                textposition="inside",
                insidetextanchor="start",
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        barmode="group",
        yaxis=dict(title="accuracy", range=[0, 1]),
        title="Steering with and without the instruction in the prompt",
    )
    return fig
