"""Line figures over layers or steering weight.

    layer_sweep(results)                     # accuracy vs layer, with a no-steering reference
    projection_curves(projection_separation(...))
    separation_curves(separation(...))
    cosine_baselines(cosine_matrix(...), split_half_stability(...), random_cosine_band(d))
    weight_sweep(weights_df)                 # accuracy and fluency vs weight
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.plots._common import TEMPLATE, color, in_order, require_columns


def _error_y(g: pd.DataFrame, value: str) -> dict | None:
    if not {"ci_low", "ci_high"} <= set(g.columns):
        return None
    return dict(type="data", array=g["ci_high"] - g[value], arrayminus=g[value] - g["ci_low"], thickness=1)


def layer_sweep(df: pd.DataFrame, series: str = "instruction", value: str = "accuracy") -> go.Figure:
    """Accuracy vs steering layer, one line per `series` value.

    Input: columns `layer, <series>, <value>` (optional `ci_low, ci_high` give error bars).
    Rows with a missing `layer` are that series' "no steering" result, drawn as a dashed
    horizontal line in the series' colour. Traces: per series "<name>" and, if it has a
    baseline row, "<name>: no steering".
    """
    require_columns(df, ["layer", series, value], "layer_sweep")
    fig = go.Figure()
    steered = df[df["layer"].notna()]
    x_range = [steered["layer"].min(), steered["layer"].max()]
    for i, name in enumerate(in_order(df[series])):
        rows = df[df[series] == name]
        line = rows[rows["layer"].notna()].sort_values("layer")
        fig.add_trace(
            go.Scatter(
                x=line["layer"], y=line[value], mode="lines+markers", name=str(name), legendgroup=str(name),
                line=dict(color=color(i)), error_y=_error_y(line, value),
            )
        )
        base = rows[rows["layer"].isna()]
        if len(base) > 1:
            raise ValueError(f"layer_sweep: {len(base)} no-steering rows for {series}={name!r}")
        if len(base) == 1:
            fig.add_trace(
                go.Scatter(
                    x=x_range, y=[base[value].item()] * 2, mode="lines", name=f"{name}: no steering",
                    legendgroup=str(name), line=dict(color=color(i), dash="dash"),
                )
            )
    fig.update_xaxes(tickvals=sorted(steered["layer"].unique()))  # the swept layers, not 4.5
    fig.update_layout(template=TEMPLATE, xaxis_title="steering layer", yaxis_title=value, title="Accuracy vs layer")
    return fig


def projection_curves(df: pd.DataFrame) -> go.Figure:
    """Mean ± sd of the with / without projections per layer (input: `projection_separation`).

    Traces: "<side> ± sd" (band, no legend entry) then "<side>", for side in with, without.
    """
    require_columns(df, ["layer", "side", "projection"], "projection_curves")
    stats = df.groupby(["side", "layer"])["projection"].agg(["mean", "std"]).reset_index()
    fig = go.Figure()
    for i, side in enumerate(["with", "without"]):
        s = stats[stats["side"] == side].sort_values("layer")
        upper, lower = s["mean"] + s["std"].fillna(0), s["mean"] - s["std"].fillna(0)
        fig.add_trace(
            go.Scatter(
                x=list(s["layer"]) + list(s["layer"])[::-1], y=list(upper) + list(lower)[::-1], fill="toself",
                mode="lines", line=dict(width=0), fillcolor=color(i), opacity=0.25, hoverinfo="skip",
                name=f"{side} ± sd", legendgroup=side, showlegend=False,
            )
        )
        fig.add_trace(
            go.Scatter(x=s["layer"], y=s["mean"], mode="lines+markers", name=side, legendgroup=side,
                       line=dict(color=color(i)))
        )
    fig.update_layout(
        template=TEMPLATE, xaxis_title="layer", yaxis_title="projection on instruction direction",
        title="Projection with vs without the instruction",
    )
    return fig


def separation_curves(df: pd.DataFrame, series: str | None = None) -> go.Figure:
    """AUROC (top) and Cohen's d (bottom) vs layer (input: `separation`).

    One line per `series` value in each panel (named by the value, legend shown once), or
    a single "AUROC" and "Cohen's d" line when `series` is None.
    """
    require_columns(df, ["layer", "auroc", "cohens_d"] + ([series] if series else []), "separation_curves")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    groups = [(name, df[df[series] == name]) for name in in_order(df[series])] if series else [(None, df)]
    for i, (name, g) in enumerate(groups):
        g = g.sort_values("layer")
        for row, col, label in ((1, "auroc", "AUROC"), (2, "cohens_d", "Cohen's d")):
            fig.add_trace(
                go.Scatter(
                    x=g["layer"], y=g[col], mode="lines+markers", name=label if name is None else str(name),
                    legendgroup=str(name), showlegend=name is not None and row == 1, line=dict(color=color(i)),
                ),
                row=row, col=1,
            )
    fig.add_hline(y=0.5, line_dash="dot", line_color="grey", row=1, col=1)
    fig.update_yaxes(title_text="AUROC", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="Cohen's d", row=2, col=1)
    fig.update_xaxes(title_text="layer", row=2, col=1)
    fig.update_layout(template=TEMPLATE, title="Separation of with / without along the direction")
    return fig


def cosine_baselines(cosines: pd.DataFrame, stability: pd.DataFrame, band: pd.DataFrame,
                     method: str = "exact") -> go.Figure:
    """Cosines between different instructions' vectors per layer, against two baselines.

    Inputs: `cosine_matrix` (each unordered pair of distinct instructions counted once),
    `split_half_stability` rows with an `instruction` column, and `random_cosine_band` (its
    `method` row). Traces: the random-direction band, the min-max range and the median of the
    cross-instruction cosines, then "split-half: <instruction>" per instruction.
    """
    require_columns(cosines, ["layer", "instruction_a", "instruction_b", "cosine"], "cosine_baselines")
    require_columns(stability, ["layer", "instruction", "cosine_mean"], "cosine_baselines")
    names = in_order(cosines["instruction_a"])
    rank = {n: i for i, n in enumerate(names)}
    off = cosines[cosines["instruction_a"].map(rank) < cosines["instruction_b"].map(rank)]
    if off.empty:
        raise ValueError("cosine_baselines needs vectors of at least two instructions")
    across = off.groupby("layer")["cosine"].agg(["min", "median", "max"]).reset_index()
    b = band.set_index("method").loc[method]
    x = list(across["layer"])
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[x[0], x[-1], x[-1], x[0]], y=[b["low"], b["low"], b["high"], b["high"]], fill="toself",
            mode="lines", line=dict(width=0), fillcolor="rgba(214,39,40,0.15)", hoverinfo="skip",
            name=f"random directions, {b['q_high'] - b['q_low']:.0%} band (d={int(b['d_model'])})",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x + x[::-1], y=list(across["max"]) + list(across["min"])[::-1], fill="toself", mode="lines",
            line=dict(width=0), fillcolor="rgba(0,0,0,0.15)", hoverinfo="skip",
            name=f"across instructions: min-max of {len(off) // len(across)} pairs",
        )
    )
    fig.add_trace(go.Scatter(x=x, y=across["median"], mode="lines+markers", name="across instructions: median",
                             line=dict(color="black", width=3)))
    for i, name in enumerate(in_order(stability["instruction"])):
        s = stability[stability["instruction"] == name].sort_values("layer")
        fig.add_trace(go.Scatter(x=s["layer"], y=s["cosine_mean"], mode="lines", name=f"split-half: {name}",
                                 line=dict(color=color(i), dash="dot")))
    fig.update_layout(template=TEMPLATE, xaxis_title="layer", yaxis_title="cosine",
                      title="Instruction vectors: across instructions vs split halves vs random")
    return fig


def weight_sweep(df: pd.DataFrame, quality: str = "fluency") -> go.Figure:
    """Accuracy (left axis) and a quality score (right axis) vs steering weight.

    Input: columns `weight, accuracy, <quality>`, one row per weight (optional
    `ci_low, ci_high` bound the accuracy). Traces: "accuracy", "<quality>".
    """
    require_columns(df, ["weight", "accuracy", quality], "weight_sweep")
    d = df.sort_values("weight")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Scatter(x=d["weight"], y=d["accuracy"], mode="lines+markers", name="accuracy",
                   line=dict(color=color(0)), error_y=_error_y(d, "accuracy")),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(x=d["weight"], y=d[quality], mode="lines+markers", name=quality,
                   line=dict(color=color(1), dash="dot")),
        secondary_y=True,
    )
    fig.update_yaxes(title_text="accuracy", secondary_y=False)
    fig.update_yaxes(title_text=quality, secondary_y=True, showgrid=False, tickformat=".2f")
    fig.update_layout(template=TEMPLATE, xaxis_title="steering weight c", title=f"Accuracy and {quality} vs weight")
    return fig
