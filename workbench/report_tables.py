"""What the report modules share: the section type and Markdown tables.

In a notebook:

    md_table(df)                        # a DataFrame as a Markdown table
    condition_label(True, False)        # "instr"
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

Section = tuple[str, str, list[go.Figure]]  # (title, markdown, figures)


def table(run: Path, name: str) -> pd.DataFrame | None:
    """tables/{name}.csv of a run, or None when the run has not written it yet."""
    path = Path(run) / "tables" / f"{name}.csv"
    return pd.read_csv(path) if path.exists() else None


def md_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    def cell(v):
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def condition_label(with_instruction: bool, steered: bool) -> str:
    return ("instr" if with_instruction else "no_instr") + ("_steered" if steered else "")
