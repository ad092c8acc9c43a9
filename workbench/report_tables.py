"""What the report modules share: the section type, a run's tables, Markdown tables, and the
pieces several experiments' sections use.

In a notebook:

    md_table(df)                        # a DataFrame as a Markdown table
    condition_label(True, False)        # "instr"
    need(run, "conditions_loose")       # tables/conditions_loose.csv (an error naming it when missing)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

Section = tuple[str, str, list[go.Figure]]  # (title, markdown, figures)
State = dict[str, Any]  # a run's run.json
Builder = Callable[[State, Path], list[Section]]  # an experiment's sections, from its run


def read_table(run: Path, name: str) -> pd.DataFrame | None:
    """tables/{name}.csv of a run, or None when the run has not written it yet."""
    path = Path(run) / "tables" / f"{name}.csv"
    return pd.read_csv(path) if path.exists() else None


def need(run: Path, name: str) -> pd.DataFrame:
    """tables/{name}.csv of a run, which its experiment writes beside the table a section waits
    for (an error naming the file when it is missing)."""
    df = read_table(run, name)
    if df is None:
        raise FileNotFoundError(f"{run} has no tables/{name}.csv: the run did not finish writing its tables")
    return df


def md_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """`df` as a Markdown table, floats formatted by `floatfmt`."""

    def cell(v: object) -> str:
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def condition_label(with_instruction: bool, steered: bool) -> str:
    return ("instr" if with_instruction else "no_instr") + ("_steered" if steered else "")


def choices_section(run: Path, name: str, keys: list[str], value: str = "layer") -> Section | None:
    """The section of a search's choices (tables/{name}_choices.csv), or None before it is written."""
    choices = read_table(run, f"{name}_choices")
    if choices is None:
        return None
    text = f"No steering is {value} -1 (layer) or 0 (weight).\n\n" + md_table(
        choices[[*keys, value, "accuracy", "no_steering_accuracy", "reason"]]
    )
    return (f"{name.replace('_', ' ').capitalize()} on validation prompts", text, [])


def search_section(state: State, run: Path, name: str, group: list[str]) -> Section | None:
    """The section of a successive-halving search (experiments/search.py) from
    tables/{name}_rounds.csv and tables/{name}_choices.csv: a figure per group but the condition
    (candidates by round, a panel per condition), and the finalists' table (the chosen
    candidate beside no steering, on all prompts). `group`: the search's group columns, the
    condition (`with_instruction`) last. None before the search is written."""
    from workbench import plots

    rounds, choices = read_table(run, f"{name}_rounds"), read_table(run, f"{name}_choices")
    if rounds is None or choices is None:
        return None
    plan = state["choices"].get(f"{name}_plan", {})
    facets = [c for c in group if c != "with_instruction"]  # a figure each; its panels: the conditions
    figs = [
        plots.search_rounds(g, title="Search: " + " / ".join(map(str, v if isinstance(v, tuple) else (v,))))
        for v, g in rounds.groupby(facets, sort=False)
    ]
    last = rounds[rounds["round"] == rounds["round"].max()]
    final = last.merge(choices[[*group, "label"]].rename(columns={"label": "chosen"}), on=group)
    final = final[(final["label"] == final["chosen"]) | (final["label"] == "none")]
    text = (
        f"Successive halving over {len(plan.get('candidates', []))} candidates, prompts per "
        f"round {plan.get('prompts')}, steered candidates kept {plan.get('keep')}; selected on "
        f"followed (loose) and not degenerate; steering must beat no steering strictly.\n\n"
        + md_table(final[[*group, "label", "n", "good", "loose", "degenerate"]])
    )
    return ("The search on validation prompts", text, figs)


def when_written(name: str, fn: Callable[[State, Path, pd.DataFrame], list[Section]]) -> Builder:
    """The builder of `fn`, run once tables/{name}.csv exists (an interrupted run has no
    sections yet) and given that table."""

    def build(state: State, run: Path) -> list[Section]:
        df = read_table(run, name)
        return [] if df is None else fn(state, run, df)

    return build


def lines_figure(
    df: pd.DataFrame, x: str, y: str, series: list[str], title: str, y_title: str, *, also: dict[str, str] | None = None
) -> go.Figure:
    """One line per `series` group; accuracy with its interval (ci_low, ci_high) as error bars;
    `also` {column: label} adds a dashed line of that column per group."""
    fig = go.Figure()
    for i, (key, g) in enumerate(df.groupby(series, sort=True)):
        values = key if isinstance(key, tuple) else (key,)
        g, name = g.sort_values(x), ", ".join(f"{s}={k}" for s, k in zip(series, values))
        color = qualitative.Plotly[i % len(qualitative.Plotly)]  # the dashed line takes its series' colour
        error = (
            dict(type="data", array=g["ci_high"] - g[y], arrayminus=g[y] - g["ci_low"], thickness=1)
            if y == "accuracy" and {"ci_low", "ci_high"} <= set(g)
            else None
        )
        fig.add_trace(
            go.Scatter(x=g[x], y=g[y], mode="lines+markers", name=name, error_y=error, line=dict(color=color))
        )
        for column, label in (also or {}).items():
            if column in g:
                fig.add_trace(
                    go.Scatter(
                        x=g[x],
                        y=g[column],
                        mode="lines+markers",
                        name=f"{name} ({label})",
                        line=dict(color=color, dash="dash"),
                    )
                )
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y_title)
    return fig
