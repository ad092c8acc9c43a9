"""Line figures over layers: projections, separation, and cosines against their baselines
(sweeps over the steering layer or weight: plots/sweeps.py).

In a notebook:

    projection_curves(projection_separation(...), standardize=True)
    separation_curves(separation_intervals(...))
    cosine_baselines(bootstrap_cosines(...), split_half_stability(...), random_cosine_band(d))
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.plots._common import TEMPLATE, color, in_order, require_columns


def projection_curves(df: pd.DataFrame, standardize: bool = False) -> go.Figure:
    """Mean ± sd of the with / without projections per layer (input: `projection_separation`).

    `standardize=True`: per layer, projections minus the without-side mean, divided by the
    pooled within-side sd. The residual stream's norm grows with depth, so raw projections
    flatten the early layers; standardized, "without" sits at 0 ± 1 and the "with" mean is
    Cohen's d, comparable across layers.
    Traces: "<side> ± sd" (band, no legend entry) then "<side>", for side in with, without.
    """
    require_columns(df, ["layer", "side", "projection"], "projection_curves")
    if standardize:
        df = _standardized(df)
    stats = df.groupby(["side", "layer"])["projection"].agg(["mean", "std"]).reset_index()
    fig = go.Figure()
    for i, side in enumerate(["with", "without"]):
        s = stats[stats["side"] == side].sort_values("layer")
        upper, lower = s["mean"] + s["std"].fillna(0), s["mean"] - s["std"].fillna(0)
        fig.add_trace(
            go.Scatter(
                x=list(s["layer"]) + list(s["layer"])[::-1],
                y=list(upper) + list(lower)[::-1],
                fill="toself",
                mode="lines",
                line=dict(width=0),
                fillcolor=color(i),
                opacity=0.25,
                hoverinfo="skip",
                name=f"{side} ± sd",
                legendgroup=side,
                showlegend=False,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=s["layer"], y=s["mean"], mode="lines+markers", name=side, legendgroup=side, line=dict(color=color(i))
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        xaxis_title="layer",
        yaxis_title=(
            "projection, standardized (without: mean 0, pooled sd 1)"
            if standardize
            else "projection on instruction direction"
        ),
        title="Projection with vs without the instruction" + (" (standardized per layer)" if standardize else ""),
    )
    return fig


def _standardized(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby(["layer", "side"])["projection"]
    parts = pd.DataFrame({"mean": g.mean(), "var": g.var(ddof=1), "n": g.size()}).reset_index()
    without = parts[parts["side"] == "without"].set_index("layer")["mean"]
    ss = ((parts["n"] - 1) * parts["var"]).groupby(parts["layer"]).sum()
    dof = (parts["n"] - 1).groupby(parts["layer"]).sum()
    pooled = (ss / dof).pow(0.5)
    out = df.copy()
    out["projection"] = (df["projection"] - df["layer"].map(without)) / df["layer"].map(pooled)
    return out


def separation_curves(df: pd.DataFrame, series: str | None = None) -> go.Figure:
    """AUROC (top) and Cohen's d (bottom) vs layer (input: `separation`, or
    `separation_intervals`, whose `auroc_low/high` and `cohens_d_low/high` become error bars,
    side by side between series).

    One line per `series` value in each panel (named by the value, legend shown once), or
    a single "AUROC" and "Cohen's d" line when `series` is None.
    """
    require_columns(df, ["layer", "auroc", "cohens_d"] + ([series] if series else []), "separation_curves")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    groups = [(name, df[df[series] == name]) for name in in_order(df[series])] if series else [(None, df)]
    for i, (name, g) in enumerate(groups):
        g = g.sort_values("layer")
        for row, col, label in ((1, "auroc", "AUROC"), (2, "cohens_d", "Cohen's d")):
            bars = None
            if {f"{col}_low", f"{col}_high"} <= set(g.columns):
                bars = dict(
                    type="data", array=g[f"{col}_high"] - g[col], arrayminus=g[col] - g[f"{col}_low"], thickness=1
                )
            fig.add_trace(
                go.Scatter(
                    x=g["layer"],
                    y=g[col],
                    mode="lines+markers",
                    name=label if name is None else str(name),
                    legendgroup=str(name),
                    showlegend=name is not None and row == 1,
                    line=dict(color=color(i)),
                    error_y=bars,
                    offsetgroup=str(i),
                ),
                row=row,
                col=1,
            )
    fig.add_hline(y=0.5, line_dash="dot", line_color="grey", row=1, col=1)
    fig.update_yaxes(title_text="AUROC", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="Cohen's d", row=2, col=1)
    fig.update_xaxes(title_text="layer", row=2, col=1)
    fig.update_layout(
        template=TEMPLATE, title="Separation of with / without along the direction", scattermode="group", scattergap=0.7
    )
    return fig


def cosine_baselines(
    cosines: pd.DataFrame,
    stability: pd.DataFrame,
    band: pd.DataFrame,
    method: str = "exact",
    by_pair: bool | None = None,
) -> go.Figure:
    """Cosines between different instructions' vectors per layer, against two baselines.

    Inputs: `cosine_matrix` or `bootstrap_cosines` (each unordered pair of distinct
    instructions counted once; `ci_low, ci_high` become a band per pair), `split_half_stability`
    rows with an `instruction` column, and `random_cosine_band` (its `method` row).
    `by_pair`: one line per pair of instructions ("a · b"); default when there are at most 3
    pairs. Otherwise the min-max range and the median over pairs.
    Traces: the random-direction band; then either the range and the median of the
    cross-instruction cosines, or per pair an optional "a · b interval" band and the "a · b"
    line; then "split-half: <instruction>" per instruction.
    """
    require_columns(cosines, ["layer", "instruction_a", "instruction_b", "cosine"], "cosine_baselines")
    require_columns(stability, ["layer", "instruction", "cosine_mean"], "cosine_baselines")
    names = in_order(pd.concat([cosines["instruction_a"], cosines["instruction_b"]]))
    rank = {n: i for i, n in enumerate(names)}
    off = cosines[cosines["instruction_a"].map(rank) < cosines["instruction_b"].map(rank)]
    if off.empty:
        raise ValueError("cosine_baselines needs vectors of at least two instructions")
    pairs = list(dict.fromkeys(zip(off["instruction_a"], off["instruction_b"])))
    by_pair = len(pairs) <= 3 if by_pair is None else by_pair
    across = off.groupby("layer")["cosine"].agg(["min", "median", "max"]).reset_index()
    b = band[band["method"] == method].iloc[0]  # the band's row for `method`
    x = list(across["layer"])
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[x[0], x[-1], x[-1], x[0]],
            y=[b["low"], b["low"], b["high"], b["high"]],
            fill="toself",
            mode="lines",
            line=dict(width=0),
            fillcolor="rgba(214,39,40,0.15)",
            hoverinfo="skip",
            name=f"random directions, {b['q_high'] - b['q_low']:.0%} band (d={int(b['d_model'])})",
        )
    )
    if by_pair:
        for k, (a, c) in enumerate(pairs):
            g = off[(off["instruction_a"] == a) & (off["instruction_b"] == c)].sort_values("layer")
            label = f"{a} · {c}"
            if {"ci_low", "ci_high"} <= set(g.columns):
                fig.add_trace(
                    go.Scatter(
                        x=list(g["layer"]) + list(g["layer"])[::-1],
                        y=list(g["ci_high"]) + list(g["ci_low"])[::-1],
                        fill="toself",
                        mode="lines",
                        line=dict(width=0),
                        fillcolor=_PAIR_FILL[k % len(_PAIR_FILL)],
                        hoverinfo="skip",
                        name=f"{label} interval",
                        legendgroup=label,
                        showlegend=False,
                    )
                )
            fig.add_trace(
                go.Scatter(
                    x=g["layer"],
                    y=g["cosine"],
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    line=dict(color="black", dash=_PAIR_DASH[k % len(_PAIR_DASH)], width=2.5),
                )
            )
    else:
        fig.add_trace(
            go.Scatter(
                x=x + x[::-1],
                y=list(across["max"]) + list(across["min"])[::-1],
                fill="toself",
                mode="lines",
                line=dict(width=0),
                fillcolor="rgba(0,0,0,0.15)",
                hoverinfo="skip",
                name=f"across instructions: min-max of {len(off) // len(across)} pairs",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=across["median"],
                mode="lines+markers",
                name="across instructions: median",
                line=dict(color="black", width=3),
            )
        )
    for i, name in enumerate(in_order(stability["instruction"])):
        s = stability[stability["instruction"] == name].sort_values("layer")
        fig.add_trace(
            go.Scatter(
                x=s["layer"],
                y=s["cosine_mean"],
                mode="lines",
                name=f"split-half: {name}",
                line=dict(color=color(i), dash="dot"),
            )
        )
    fig.update_layout(
        template=TEMPLATE,
        xaxis_title="layer",
        yaxis_title="cosine",
        title="Instruction vectors: across instructions vs split halves vs random",
    )
    return fig


_PAIR_DASH = ("solid", "dash", "longdash")
_PAIR_FILL = ("rgba(0,0,0,0.12)", "rgba(0,0,0,0.08)", "rgba(0,0,0,0.05)")
