"""Sweeps: accuracy (and fluency) over the steering layer or the steering weight.

In a notebook:

    layer_sweep(results)                     # accuracy vs layer, with a no-steering reference
    layer_sweep(results, facet="instruction", series="condition", fluency="degenerate")
    weight_sweep(weights_df)                 # accuracy and fluency vs weight
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.plots._common import TEMPLATE, color, in_order, require_columns


def _error_y(g: pd.DataFrame, value: str) -> dict[str, Any] | None:
    if not {"ci_low", "ci_high"} <= set(g.columns):
        return None
    return dict(type="data", array=g["ci_high"] - g[value], arrayminus=g[value] - g["ci_low"], thickness=1)


_REFERENCE_DASH = ("dot", "dashdot", "longdash")


def layer_sweep(
    df: pd.DataFrame,
    series: str | None = "instruction",
    value: str = "accuracy",
    *,
    facet: str | None = None,
    fluency: str | None = None,
    references: pd.DataFrame | None = None,
    max_lines: int = 4,
    cols: int = 3,
    title: str | None = None,
) -> go.Figure:
    """Accuracy vs steering layer: one line per `series` value, one panel per `facet` value.

    Input: columns `layer, <value>` plus `<series>` / `<facet>` when named (optional
    `ci_low, ci_high` give error bars, drawn side by side rather than on top of each other).
    Rows with a missing `layer` are that line's "no steering" result, drawn as a dashed
    horizontal line in its colour. More than `max_lines` series in one panel become small
    multiples: one panel per series value (`facet=series`), `cols` panels a row.

    `fluency`: a column (e.g. "degenerate", the share of degenerate answers) drawn in a smaller
    panel under each accuracy panel, same colours. `references`: further horizontal lines shared
    by every panel, e.g. "instruction in prompt": columns `reference, <value>` (and `<facet>` for
    a value per panel), drawn dotted in grey, one legend entry each.

    Traces: per panel and series "<name>" then, with a baseline row, "<name>: no steering"
    (legend entries once per series); then the fluency traces; then the references.
    """
    need = ["layer", value] + [c for c in (series, facet, fluency) if c]
    require_columns(df, need, "layer_sweep")
    if facet is None and series is not None and df[series].nunique() > max_lines:
        facet, series = series, None
    if references is not None:
        require_columns(references, ["reference", value], "layer_sweep references")
    panels = in_order(df[facet]) if facet else [None]
    names = in_order(df[series]) if series else [None]
    steered = df[df["layer"].notna()]
    if steered.empty:
        raise ValueError("layer_sweep: no row has a layer (only no-steering rows)")
    x_range = [steered["layer"].min(), steered["layer"].max()]
    n_cols = min(cols, len(panels))
    n_rows = -(-len(panels) // n_cols)
    # with a fluency panel each grid row is accuracy, fluency and (between grid rows) an empty
    # spacer row, so a panel title never sits on the tick labels of the fluency panel above it
    rows_per = 3 if fluency else 1
    n_sub = n_rows * rows_per - (1 if fluency else 0)
    kinds = (["acc", "flu", "gap"] * n_rows)[:n_sub] if fluency else ["acc"] * n_rows
    specs: list[list[dict[str, Any] | None]] = [[None] * n_cols if k == "gap" else [{}] * n_cols for k in kinds]
    titles = []
    for r, kind in enumerate(kinds):
        if kind == "acc":
            cells = panels[(r // rows_per) * n_cols : (r // rows_per + 1) * n_cols]
            titles += [str(c) for c in cells] + [""] * (n_cols - len(cells))
        elif kind == "flu":
            titles += [""] * n_cols
    fig = make_subplots(
        rows=n_sub,
        cols=n_cols,
        specs=specs,
        subplot_titles=titles if facet else None,
        row_heights=[dict(acc=0.6, flu=0.25, gap=0.15)[k] for k in kinds] if fluency else None,
        vertical_spacing=0.025 / max(1, n_rows) ** 0.5 if fluency else 0.12 / max(1, n_rows) ** 0.5,
        horizontal_spacing=0.06 if n_cols > 1 else 0.02,
    )
    shown: set[str] = set()

    def legend(key: str) -> bool:
        first = key not in shown
        shown.add(key)
        return first

    for p, panel in enumerate(panels):
        row, col = (p // n_cols) * rows_per + 1, p % n_cols + 1
        part = df[df[facet] == panel] if facet else df
        for i, name in enumerate(names):
            rows = part[part[series] == name] if series else part
            label = str(name) if series else value
            style = dict(color=color(i if series else 0))
            line = rows[rows["layer"].notna()].sort_values("layer")
            fig.add_trace(
                go.Scatter(
                    x=line["layer"],
                    y=line[value],
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=legend(label),
                    line=style,
                    error_y=_error_y(line, value),
                    offsetgroup=str(i),
                ),
                row=row,
                col=col,
            )
            base = rows[rows["layer"].isna()]
            if len(base) > 1:
                raise ValueError(
                    f"layer_sweep: {len(base)} no-steering rows for {series}={name!r}"
                    + (f" in panel {panel!r}" if facet else "")
                )
            if len(base) == 1:
                base_label = f"{label}: no steering" if series else "no steering"
                fig.add_trace(
                    go.Scatter(
                        x=x_range,
                        y=[base[value].item()] * 2,
                        mode="lines",
                        name=base_label,
                        legendgroup=label,
                        showlegend=legend(base_label),
                        line=dict(style, dash="dash"),
                    ),
                    row=row,
                    col=col,
                )
            if fluency:
                flu = rows.sort_values("layer")
                fig.add_trace(
                    go.Scatter(
                        x=flu.loc[flu["layer"].notna(), "layer"],
                        y=flu.loc[flu["layer"].notna(), fluency],
                        mode="lines+markers",
                        name=f"{label}: {fluency}",
                        legendgroup=label,
                        showlegend=False,
                        line=dict(style, width=1.5),
                        marker=dict(size=5),
                        offsetgroup=str(i),
                    ),
                    row=row + 1,
                    col=col,
                )
                if flu["layer"].isna().any():
                    fig.add_trace(
                        go.Scatter(
                            x=x_range,
                            y=[flu.loc[flu["layer"].isna(), fluency].iloc[0]] * 2,
                            mode="lines",
                            name=f"{label}: {fluency}, no steering",
                            legendgroup=label,
                            showlegend=False,
                            line=dict(style, dash="dash", width=1.5),
                        ),
                        row=row + 1,
                        col=col,
                    )
        if references is not None:
            refs = references
            if facet and facet in references.columns:
                refs = references[references[facet] == panel]
            for j, ref in enumerate(in_order(references["reference"])):
                level = refs.loc[refs["reference"] == ref, value]
                if level.empty:
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=x_range,
                        y=[level.iloc[0]] * 2,
                        mode="lines",
                        name=str(ref),
                        legendgroup=f"ref:{ref}",
                        showlegend=legend(f"ref:{ref}"),
                        line=dict(color="rgb(90,90,90)", dash=_REFERENCE_DASH[j % len(_REFERENCE_DASH)], width=2),
                    ),
                    row=row,
                    col=col,
                )
    ticks = sorted(steered["layer"].unique())
    fig.update_xaxes(tickvals=ticks, range=[x_range[0] - 1, x_range[1] + 1])  # the swept layers, not 4.5
    bounded = df[value].between(0, 1).all()
    for p in range(len(panels)):
        row, col = (p // n_cols) * rows_per + 1, p % n_cols + 1
        if bounded:
            fig.update_yaxes(range=[-0.05, 1.05], row=row, col=col)
        if fluency:
            fig.update_xaxes(showticklabels=False, row=row, col=col)  # the fluency panel below has them
            fig.update_yaxes(
                range=[-0.05, 1.05] if df[fluency].between(0, 1).all() else None, nticks=3, row=row + 1, col=col
            )
            if col == 1:
                fig.update_yaxes(title_text=fluency, row=row + 1, col=col)
        if p + n_cols >= len(panels):  # no panel below this one
            fig.update_xaxes(title_text="steering layer", row=row + (1 if fluency else 0), col=col)
        if col == 1:
            fig.update_yaxes(title_text=value, row=row, col=col)
    many = facet is not None
    fig.update_layout(
        template=TEMPLATE,
        scattermode="group",
        scattergap=0.75,
        title=title or ("Accuracy vs layer" if value == "accuracy" else f"{value} vs steering layer"),
        height=(300 + (170 if fluency else 0)) * n_rows + 160 if many else (560 if fluency else None),
        width=max(700, 360 * n_cols + 140) if many else None,
        legend=dict(orientation="h", yref="container", y=0.0, yanchor="bottom", x=0, xanchor="left") if many else None,
        margin=dict(b=90) if many else None,
    )
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
        go.Scatter(
            x=d["weight"],
            y=d["accuracy"],
            mode="lines+markers",
            name="accuracy",
            line=dict(color=color(0)),
            error_y=_error_y(d, "accuracy"),
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=d["weight"], y=d[quality], mode="lines+markers", name=quality, line=dict(color=color(1), dash="dot")
        ),
        secondary_y=True,
    )
    fig.update_yaxes(title_text="accuracy", secondary_y=False)
    fig.update_yaxes(title_text=quality, secondary_y=True, showgrid=False, tickformat=".2f")
    fig.update_layout(template=TEMPLATE, xaxis_title="steering weight c", title=f"Accuracy and {quality} vs weight")
    return fig
