"""Shared look and input checks for the figure builders."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
import plotly.colors

TEMPLATE = "plotly_white"
PALETTE = plotly.colors.qualitative.Plotly


def color(i: int) -> str:
    """The i-th colour of the palette (cycling)."""
    return str(PALETTE[i % len(PALETTE)])


def require_columns(df: pd.DataFrame, columns: Iterable[str], builder: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{builder} needs columns {missing}; got {list(df.columns)}")


def in_order(values: pd.Series) -> list[Any]:
    """Distinct values in order of first appearance (legend order follows the table)."""
    return list(pd.unique(values))
