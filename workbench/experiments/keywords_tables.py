"""The keyword experiment's tables: what its search chose, the layer each arm is swept at on the
test prompts, the weight sweeps and the headline (loose, good = followed and not degenerate,
degenerate rate, word match).

In a notebook:

    sweep_at = sweep_layers(rounds, chosen, ["arm", "with_instruction"])   # experiments.search; None: NONE
    choices_table(chosen, sweep_at, norms, "norm_percent")
    write_tables(run, scored, chosen, sweep_at, norms, "norm_percent")   # tables/headline.csv, weight_sweep_*.csv
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from workbench.experiments.grid import NONE, accuracy_table, raw_weight
from workbench.experiments.rundir import RunDir
from workbench.experiments.search import Candidate

Group = tuple[str, bool]  # what the search chooses per: (arm, with the instruction in the prompt)


def choices_table(
    chosen: Mapping[Group, Candidate], sweep_at: Mapping[Group, int], norms: dict[int, float], unit: str
) -> pd.DataFrame:
    """One line per (arm, condition): the chosen candidate (label; layer -1 and weight 0: no
    steering), its weight in `unit` and as the hooks use it, and the layer the test sweep runs at."""
    return pd.DataFrame(
        [
            dict(
                arm=a,
                with_instruction=w,
                label=c.label,
                layer=c.layer,
                weight=c.strength,
                raw_weight=raw_weight(c.strength, c.layer, norms, unit) if c.steered else 0.0,
                sweep_layer=sweep_at[(a, w)],
            )
            for (a, w), c in chosen.items()
        ]
    )


def write_tables(
    run: RunDir,
    res: pd.DataFrame,
    chosen: Mapping[Group, Candidate],
    sweep_at: Mapping[Group, int],
    norms: dict[int, float],
    unit: str,
) -> None:
    """The weight sweeps (loose and word-match accuracy per weight at the swept layer) and the
    headline: no steering vs the chosen candidate, per arm and condition; each with the good
    (followed and not degenerate) and degenerate rates."""
    for metric in ("loose", "word_match"):
        sweep = accuracy_table(
            res, ["arm", "with_instruction", "weight"], metric=metric, means=("good", "distinct_2", "n_tokens")
        )
        sweep["layer"] = [sweep_at[(a, w)] for a, w in zip(sweep["arm"], sweep["with_instruction"])]
        sweep["raw_weight"] = [
            raw_weight(c, layer, norms, unit) if layer != NONE else 0.0
            for c, layer in zip(sweep["weight"], sweep["layer"])
        ]
        sweep.to_csv(run.file("tables", f"weight_sweep_{metric}.csv"), index=False)
    # the headline: no steering vs the chosen weight (none vs none when no steering was chosen)
    head = res[(res["weight"] == 0) | res["chosen"]]
    head = pd.concat([head[head["weight"] == 0], head[head["chosen"]].assign(steered=True)]).drop_duplicates(
        ["arm", "with_instruction", "steered", "row_id"]
    )
    table = accuracy_table(head, ["arm", "with_instruction", "steered"], means=("good", "word_match"))
    pick = [
        chosen[(a, w)] if s else Candidate()
        for a, w, s in zip(table["arm"], table["with_instruction"], table["steered"])
    ]
    table["layer"] = [c.layer for c in pick]
    table["weight"] = [c.strength for c in pick]
    table.to_csv(run.file("tables", "headline.csv"), index=False)
