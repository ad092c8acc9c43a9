"""The search, round by round: which candidates ran on how many prompts, and how they fared.

In a notebook:

    fig = P.search_rounds(rounds[rounds["instruction_id"] == "detectable_format:title"])
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from workbench.plots._common import TEMPLATE


def _layer_color(layer: int, layers: list[int]) -> str:
    """A layer's colour on a sequential scale: a dozen layers get a dozen distinct colours that
    read as depth (a qualitative palette of ten repeats)."""
    at = layers.index(layer) / max(len(layers) - 1, 1)
    return str(sample_colorscale("Viridis", [0.9 * at])[0])


def search_rounds(rounds: pd.DataFrame, title: str = "") -> go.Figure:
    """One panel per condition (`with_instruction`), x = prompts per candidate in that round,
    y = the share followed and not degenerate; a line per candidate, ending where the search
    dropped it. No steering is the black dashed line. A candidate keeps one colour (its layer's
    depth on a sequential scale, early dark to late light) and line style (solid adjust, dotted
    add) in both panels; where a mode has several strengths, larger markers mark larger ones.
    Hover shows loose and degenerate rates."""
    conditions = sorted(rounds["with_instruction"].unique())
    layers = sorted(int(x) for x in rounds.loc[rounds["label"] != "none", "layer"].unique())
    steered = rounds[rounds["label"] != "none"]
    strengths = {m: sorted(g.unique()) for m, g in steered.groupby("mode")["strength"]} if "strength" in rounds else {}
    shown: set[str] = set()
    fig = make_subplots(
        rows=1,
        cols=len(conditions),
        shared_yaxes=True,
        subplot_titles=[("with" if c else "without") + " the instruction" for c in conditions],
    )
    for col, cond in enumerate(conditions, start=1):
        part = rounds[rounds["with_instruction"] == cond]
        for label, g in part.groupby("label", sort=False):
            g = g.sort_values("n_prompts")
            none = label == "none"
            style = (
                dict(color="black", dash="dash", width=3)
                if none
                else dict(
                    color=_layer_color(int(g["layer"].iloc[0]), layers),
                    dash="dot" if g["mode"].iloc[0] == "add" else "solid",
                    width=1.5,
                )
            )
            ranks = strengths.get(g["mode"].iloc[0], [])
            size = 6 + 4 * ranks.index(g["strength"].iloc[0]) if not none and len(ranks) > 1 else 6
            fig.add_trace(
                go.Scatter(
                    x=g["n_prompts"],
                    y=g["good"],
                    mode="lines+markers",
                    marker=dict(size=size),
                    name=label,
                    legendgroup=label,
                    showlegend=label not in shown,
                    line=style,
                    customdata=g[["loose", "degenerate", "n"]].to_numpy(),
                    hovertemplate=(
                        f"{label}<br>%{{x}} prompts: good %{{y:.2f}}, loose "
                        "%{customdata[0]:.2f}, degenerate %{customdata[1]:.2f}<extra></extra>"
                    ),
                ),
                row=1,
                col=col,
            )
            shown.add(str(label))
        fig.update_xaxes(
            title_text="validation prompts (round)",
            type="log",
            tickvals=sorted(part["n_prompts"].unique()),
            row=1,
            col=col,
        )
    fig.update_yaxes(title_text="followed and not degenerate", range=[-0.03, 1.03], row=1, col=1)
    fig.update_layout(
        template=TEMPLATE,
        title=title or "Search by round",
        height=600,
        width=1000,
        legend=dict(font=dict(size=10), orientation="h", y=-0.25, yanchor="top"),
        margin=dict(b=200),
    )
    return fig
