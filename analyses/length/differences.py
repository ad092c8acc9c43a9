"""Steered minus unsteered accuracy on the same prompts, with a 95% bootstrap interval over base
queries (each query contributes its mean difference over n = 1..5).

    .venv/bin/python analyses/length/differences.py analyses/length/run
"""

import sys

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

from workbench.report import md_table

run = sys.argv[1] if len(sys.argv) > 1 else "analyses/length/run"
scores = pd.read_csv(f"{run}/scores.csv")
lines = []
for (arm, with_instruction), g in scores.groupby(["arm", "with_instruction"]):
    for metric in ("loose", "loose_not_degenerate"):
        wide = g.pivot_table(index=["query", "max_n"], columns="weight", values=metric, aggfunc="first").astype(float)
        for c in [w for w in wide.columns if w != 0]:
            per_query = (wide[c] - wide[0]).groupby(level="query").mean().to_numpy()
            ci = bootstrap(
                (per_query,), np.mean, n_resamples=5000, method="percentile", random_state=np.random.default_rng(0)
            ).confidence_interval
            lines.append(
                dict(
                    arm=arm,
                    with_instruction=with_instruction,
                    metric=metric,
                    weight=c,
                    difference=per_query.mean(),
                    ci_low=ci.low,
                    ci_high=ci.high,
                )
            )
table = pd.DataFrame(lines)
print(md_table(table))
