"""The format experiment's tables: the four conditions (instruction in the prompt x steered) with
Wilson intervals and exact McNemar tests, per instruction with the chosen settings, and fluency.

In a notebook:

    write_tables(run, scored)       # tables/two_by_two_*.csv, mcnemar_*.csv, per_instruction_*.csv, fluency.csv
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from workbench.experiments.rundir import RunDir


def fill_unsteered(scored: pd.DataFrame) -> pd.DataFrame:
    """A condition whose search chose no steering gets its unsteered lines again as its steered
    ones (so every condition has both)."""
    steered = scored[scored["steered"]]
    have = set(zip(steered["row_id"], steered["with_instruction"]))
    plain = scored[~scored["steered"]]
    missing = plain[[(k, w) not in have for k, w in zip(plain["row_id"], plain["with_instruction"])]]
    return pd.concat([scored, missing.assign(steered=True)], ignore_index=True)


def write_tables(run: RunDir, scored: pd.DataFrame) -> None:
    """The four-condition tables for loose, good (followed and not degenerate) and strict
    accuracy (Wilson intervals, exact McNemar), per instruction with the chosen settings, and
    fluency (perplexity, degenerate rate) per condition."""
    from workbench.stats import mcnemar_table, two_by_two

    chosen = pd.DataFrame(run.state["choices"].get("chosen", []))
    for metric in ("loose", "good", "strict"):
        kw: dict[str, Any] = dict(instruction_col="with_instruction", steering_col="steered", correct_col=metric)
        two_by_two(scored, pair_col="row_id", **kw).to_csv(run.file("tables", f"two_by_two_{metric}.csv"), index=False)
        mcnemar_table(scored, pair_col="row_id", **kw).to_csv(run.file("tables", f"mcnemar_{metric}.csv"), index=False)
        per = two_by_two(scored, by=["instruction_id"], **kw)
        if len(chosen):
            per = per.merge(
                chosen[["instruction_id", "with_instruction", "layer", "mode", "strength"]],
                on=["instruction_id", "with_instruction"],
                how="left",
            )
        per.to_csv(run.file("tables", f"per_instruction_{metric}.csv"), index=False)
    if "ppl" in scored:
        (
            scored.groupby(["with_instruction", "steered"])
            .agg(
                n=("job", "size"),
                median_ppl=("ppl", "median"),
                mean_distinct_2=("distinct_2", "mean"),
                degenerate_rate=("degenerate", "mean"),
                mean_tokens=("n_tokens", "mean"),
                cut_at_limit=("finish_reason", lambda s: float((s == "length").mean())),
            )
            .reset_index()
            .to_csv(run.file("tables", "fluency.csv"), index=False)
        )
