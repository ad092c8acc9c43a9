"""The logit lens of a steering vector as a token grid.

In a notebook:

    P.logit_lens(A.logit_lens(model, vec, k=8), layers=[6, 12, 18, 26])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.plots._common import TEMPLATE, require_columns

_TITLES = {"top": "promoted (highest logits)", "bottom": "suppressed (lowest logits)"}


def show_token(token: str) -> str:
    """A token as a grid label: leading / trailing spaces as '␣', newlines as '⏎', tabs as '⇥'."""
    text = token.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "")
    stripped = text.strip(" ")
    lead, trail = len(text) - len(text.lstrip(" ")), len(text) - len(text.rstrip(" "))
    if not stripped:
        return "␣" * len(text) or "∅"
    return "␣" * lead + stripped + "␣" * trail


def logit_lens(
    df: pd.DataFrame,
    layers: Sequence[int] | None = None,
    sides: Sequence[str] = ("top", "bottom"),
    title: str = "What the direction promotes: logit lens per layer",
) -> go.Figure:
    """A grid per side (input: `logit_lens`): one column per layer, one row per rank (1 at the
    top), each cell the token, coloured by its logit (one diverging scale for both sides, white
    at 0). Traces: one Heatmap per side, named by the side. `layers` picks columns (default all)."""
    require_columns(df, ["layer", "side", "rank", "token", "logit"], "logit_lens")
    if "example" in df.columns:
        raise ValueError(
            "logit_lens draws one readout per layer; summarise per-example rows with "
            "A.lens_agreement, or pick one example"
        )
    if layers is not None:
        missing = sorted(set(layers) - set(df["layer"]))
        if missing:
            raise ValueError(f"logit_lens: no rows for layers {missing}")
        df = df[df["layer"].isin(layers)]
    sides = [s for s in sides if s in set(df["side"])]
    if not sides:
        raise ValueError("logit_lens: no rows for the requested sides")
    cols = sorted(df["layer"].unique())
    k = int(df["rank"].max())
    bound = float(np.nanmax(np.abs(df["logit"]))) or 1.0
    fig = make_subplots(
        rows=len(sides),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.16 / len(sides),
        subplot_titles=[_TITLES.get(s, s) for s in sides],
    )
    for row, side in enumerate(sides, start=1):
        part = df[df["side"] == side]
        logit = part.pivot(index="rank", columns="layer", values="logit").reindex(index=range(1, k + 1), columns=cols)
        token = part.pivot(index="rank", columns="layer", values="token").reindex(index=range(1, k + 1), columns=cols)
        text = token.map(lambda t: show_token(t) if isinstance(t, str) else "")
        fig.add_trace(
            go.Heatmap(
                z=logit.to_numpy(dtype=float),
                x=[f"L{c}" for c in cols],
                y=list(logit.index),
                text=text.to_numpy(),
                texttemplate="%{text}",
                textfont=dict(size=11),
                zmin=-bound,
                zmax=bound,
                zmid=0,
                colorscale="RdBu_r",
                name=side,
                showscale=row == 1,
                colorbar=dict(title="logit"),
                hovertemplate="layer %{x}, rank %{y}: %{text} (logit %{z:.2f})<extra>" + side + "</extra>",
            ),
            row=row,
            col=1,
        )
        fig.update_yaxes(autorange="reversed", title_text="rank", dtick=1, row=row, col=1)
    fig.update_layout(
        template=TEMPLATE, title=title, width=max(520, 140 + 95 * len(cols)), height=120 + len(sides) * (40 + 26 * k)
    )
    return fig
