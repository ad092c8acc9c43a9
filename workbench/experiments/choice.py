"""The paper-style choice of a candidate (a layer, or a weight) per group from a scored grid: the
best mean accuracy among the candidates no more degenerate than no steering. The experiments
choose with the successive-halving search (experiments/search.py) instead; this rule stays for
notebooks/03_layer_sweep.ipynb, which shows it on a full layer grid.

In a notebook:

    table, choices = choose_candidate(scored, group=["arm", "with_instruction"])
    choices[["arm", "with_instruction", "layer", "accuracy", "reason"]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd


def choose_candidate(
    scored: pd.DataFrame,
    *,
    group: Sequence[str],
    metric: str = "loose",
    none_value: float = -1,
    candidate: str = "layer",
    steered_only: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per group, the candidate layer (`none_value` = no steering) with the best mean `metric`.
    A steered layer is dropped when it has more degenerate outputs than no steering has (the
    paper's "any degenerate output" rule when the unsteered outputs are clean; a small model's
    own loops are not held against the layers). Ties go to no steering, then the lower layer.
    `candidate` names the column searched over (e.g. "weight", with none_value 0, for a weight
    sweep at a fixed layer); `steered_only` keeps no steering as the baseline of the degeneration
    rule but never chooses it (a sweep that needs some steered candidate).
    Returns (the per-candidate table, the choices with their reasons)."""
    cols = [*group, candidate]
    table = (
        scored.groupby(cols)
        .agg(accuracy=(metric, "mean"), n=(metric, "size"), degenerate=("degenerate", "sum"))
        .reset_index()
    )
    choices = []
    for key, g in table.groupby(list(group)):
        values = key if isinstance(key, tuple) else (key,)
        is_none = g[candidate] == none_value
        allowed = g.loc[is_none, "degenerate"].sum()
        bad = (g["degenerate"] > allowed) & ~is_none
        ok, dropped = g[~bad & ~(is_none & steered_only)], sorted(_py(v) for v in g.loc[bad, candidate])
        ranked = ok.assign(_none=ok[candidate] != none_value).sort_values(
            ["accuracy", "_none", candidate], ascending=[False, True, True]
        )
        best = ranked.iloc[0] if len(ranked) else None
        baseline = g.loc[is_none, "accuracy"]
        choices.append(
            dict(
                zip(group, values),
                **{candidate: _py(best[candidate]) if best is not None else none_value},
                accuracy=float(best["accuracy"]) if best is not None else float("nan"),
                no_steering_accuracy=float(baseline.iloc[0]) if len(baseline) else float("nan"),
                dropped_degenerate=dropped,
                reason=_reason(best, baseline, dropped, none_value, candidate),
            )
        )
    return table, pd.DataFrame(choices)


def _py(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (run.json stays plain JSON)."""
    return value.item() if hasattr(value, "item") else value


def _reason(
    best: pd.Series | None, baseline: pd.Series, dropped: list[Any], none_value: float, candidate: str = "layer"
) -> str:
    if best is None:
        return "every candidate produced a degenerate output"
    drop = f"; {candidate}s {dropped} dropped as degenerate" if dropped else ""
    if best[candidate] == none_value:
        return f"no {candidate} beat no steering ({best['accuracy']:.3f}){drop}"
    base = float(baseline.iloc[0]) if len(baseline) else float("nan")
    return f"best validation accuracy {best['accuracy']:.3f} vs {base:.3f} unsteered{drop}"
