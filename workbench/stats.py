"""Comparison statistics: accuracy intervals, the paper's 2x2 table, paired McNemar tests.

    scores = pd.concat([
        wb.score_ifeval(rows, outputs[w, s]).assign(with_instruction=w, steered=s)
        for w in (False, True) for s in (False, True)])
    wb.stats.two_by_two(scores, instruction_col="with_instruction",
                        steering_col="steered", correct_col="loose")
    wb.stats.mcnemar_table(scores, instruction_col="with_instruction",
                           steering_col="steered", correct_col="loose", pair_col="key")

Steering is judged on the same prompts with and without it, so the test of a
difference is McNemar's exact test on the paired outcomes, not a comparison of two
independent proportions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

# one value per outcome: a list, a pandas Series (a table's column) or a 1-d array
Outcomes: TypeAlias = Sequence[Any] | pd.Series | np.ndarray


def accuracy_ci(successes: float, n: int, alpha: float = 0.05, method: str = "wilson") -> tuple[float, float]:
    """Two-sided 1 - alpha confidence interval of a proportion (statsmodels `proportion_confint`).

        accuracy_ci(50, 163)             # Wilson 95% interval
        accuracy_ci(50, 163, method="beta")   # Clopper-Pearson

    `n == 0` gives (nan, nan).
    """
    if n == 0:
        return (math.nan, math.nan)
    low, high = proportion_confint(successes, n, alpha=alpha, method=method)
    return (float(low), float(high))


def clustered_accuracy_ci(
    correct: Outcomes, clusters: Outcomes, alpha: float = 0.05, *, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Interval of a proportion whose outcomes come in correlated clusters (one base query scored
    at several thresholds, say): a percentile bootstrap over clusters (scipy), resampling whole
    clusters and taking total correct / total outcomes. With one cluster, or every cluster at the
    same proportion (no between-cluster spread), it falls back to a Wilson interval over the
    number of clusters, the effective sample size when clusters are fully correlated.

        clustered_accuracy_ci(df.loose, df["query"])
    """
    from scipy.stats import bootstrap

    frame = pd.DataFrame({"k": np.asarray(correct, dtype=float), "c": list(clusters)})
    per = frame.groupby("c", sort=False)["k"].agg(["sum", "count"])
    k, n = per["sum"].to_numpy(), per["count"].to_numpy(dtype=float)
    if len(per) == 0:
        return (math.nan, math.nan)
    rate = k / n
    if len(per) == 1 or np.ptp(rate) == 0:
        return accuracy_ci(k.sum() / n.sum() * len(per), len(per), alpha)  # a fractional count is fine
    res = bootstrap(
        (k, n),
        lambda a, b, axis=-1: a.sum(axis) / b.sum(axis),
        paired=True,
        vectorized=True,
        confidence_level=1 - alpha,
        n_resamples=n_resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def mcnemar_exact(a: Outcomes, b: Outcomes) -> dict[str, float]:
    """Exact McNemar test of paired outcomes `a[i]`, `b[i]` (e.g. unsteered, steered).

        mcnemar_exact(df.loose_plain, df.loose_steered)["pvalue"]

    Returns n, acc_a, acc_b, b01 (a wrong, b right: gains of b), b10 (a right, b wrong:
    losses), statistic (min(b01, b10)) and pvalue, the two-sided exact binomial test of
    b01 against b01 + b10 at 1/2 (statsmodels `mcnemar(table, exact=True)`).
    """
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired outcomes need equal 1-d lengths, got {x.shape} and {y.shape}")
    b01, b10 = int(np.sum(~x & y)), int(np.sum(x & ~y))
    # rows: a right / wrong; columns: b right / wrong
    table = [[int(np.sum(x & y)), b10], [b01, int(np.sum(~x & ~y))]]
    res = mcnemar(table, exact=True)
    n = len(x)
    return {
        "n": n,
        "acc_a": float(x.mean()) if n else math.nan,
        "acc_b": float(y.mean()) if n else math.nan,
        "b01": b01,
        "b10": b10,
        "statistic": float(res.statistic),
        "pvalue": float(res.pvalue),
    }


def _as_list(cols: str | Sequence[str]) -> list[str]:
    return [cols] if isinstance(cols, str) else list(cols)


def two_by_two(
    df: pd.DataFrame,
    *,
    instruction_col: str,
    steering_col: str,
    correct_col: str,
    pair_col: str | Sequence[str] | None = None,
    by: Sequence[str] = (),
    alpha: float = 0.05,
    method: str = "wilson",
) -> pd.DataFrame:
    """Accuracy per condition (instruction in the prompt x steering), with intervals.

        two_by_two(scores, instruction_col="with_instruction", steering_col="steered",
                   correct_col="loose")
        two_by_two(scores, ..., by=["instruction_id"])    # one 2x2 per instruction type

    One line per condition: the `by` columns, instruction_col, steering_col, n,
    successes, accuracy, ci_low, ci_high. With `pair_col`, a pair appearing twice in a
    condition is an error (it would count one prompt twice).
    """
    keys = [*by, instruction_col, steering_col]
    if pair_col is not None:
        dup = df.duplicated([*keys, *_as_list(pair_col)])
        if dup.any():
            raise ValueError(
                f"{int(dup.sum())} lines repeat a ({', '.join(_as_list(pair_col))}) "
                f"within a condition of ({', '.join(keys)})"
            )
    lines = []
    for cond, group in df.groupby(keys, sort=True):
        n, k = len(group), int(group[correct_col].astype(bool).sum())
        lines.append((*cond, n, k, k / n, *accuracy_ci(k, n, alpha, method)))
    return pd.DataFrame(lines, columns=[*keys, "n", "successes", "accuracy", "ci_low", "ci_high"])


def mcnemar_table(
    df: pd.DataFrame,
    *,
    instruction_col: str,
    steering_col: str,
    correct_col: str,
    pair_col: str | Sequence[str],
    baseline: Any = False,
    by: Sequence[str] = (),
) -> pd.DataFrame:
    """Steered vs unsteered within each instruction condition, paired by `pair_col`.

        mcnemar_table(scores, instruction_col="with_instruction", steering_col="steered",
                      correct_col="loose", pair_col="key")
        mcnemar_table(scores, ..., pair_col=["key", "instruction_id"])  # multi-instruction prompts

    `steering_col` must hold exactly two values; `baseline` names the unsteered one
    (default False), the other is the steered one. One line per (by..., instruction)
    condition: n_pairs, n_unpaired (lines whose pair lacks the other steering value;
    left out of the test), acc_unsteered, acc_steered (over the pairs), b01 (gained:
    unsteered wrong, steered right), b10 (lost), statistic, pvalue (exact McNemar).
    """
    values = pd.unique(df[steering_col])
    if len(values) != 2 or baseline not in list(values):
        raise ValueError(
            f"{steering_col!r} must hold exactly two values, one of them the "
            f"baseline {baseline!r}; found {list(values)}"
        )
    treated = next(v for v in values if v != baseline)
    pair, keys = _as_list(pair_col), [*by, instruction_col]
    if df.duplicated([*keys, steering_col, *pair]).any():
        raise ValueError(
            f"a ({', '.join(pair)}) appears twice in one condition of "
            f"({', '.join([*keys, steering_col])}); pairs must be unique"
        )
    lines = []
    for cond, group in df.groupby(keys, sort=True):
        # reindex, not wide[[False, True]], which pandas would read as a row mask
        both = (
            group.assign(_ok=group[correct_col].astype(bool))
            .pivot(index=pair, columns=steering_col, values="_ok")
            .reindex(columns=[baseline, treated])
            .dropna()
        )
        n_unpaired = len(group) - 2 * len(both)
        if len(both):
            res = mcnemar_exact(both.iloc[:, 0].astype(bool), both.iloc[:, 1].astype(bool))
        else:
            res = {"acc_a": math.nan, "acc_b": math.nan, "b01": 0, "b10": 0, "statistic": math.nan, "pvalue": math.nan}
        lines.append(
            (
                *cond,
                len(both),
                n_unpaired,
                res["acc_a"],
                res["acc_b"],
                res["b01"],
                res["b10"],
                res["statistic"],
                res["pvalue"],
            )
        )
    return pd.DataFrame(
        lines,
        columns=[*keys, "n_pairs", "n_unpaired", "acc_unsteered", "acc_steered", "b01", "b10", "statistic", "pvalue"],
    )
