"""Statistics against hand computations and independent formulas."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from workbench.stats import accuracy_ci, clustered_accuracy_ci, mcnemar_exact, mcnemar_table, two_by_two


def test_wilson_interval_by_formula():
    k, n, z = 18, 163, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert accuracy_ci(k, n) == pytest.approx((centre - half, centre + half), rel=1e-9)
    low, high = accuracy_ci(0, 10, method="beta")
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 10))  # Clopper-Pearson
    assert all(math.isnan(x) for x in accuracy_ci(0, 0))


def test_mcnemar_hand_case():
    # discordant: b01 = 6 gains, b10 = 1 loss; p = 2 * (C(7,0) + C(7,1)) / 2**7 = 0.125
    a = [True] * 3 + [True] + [False] * 6 + [False] * 2
    b = [True] * 3 + [False] + [True] * 6 + [False] * 2
    r = mcnemar_exact(a, b)
    assert (r["n"], r["b01"], r["b10"], r["statistic"]) == (12, 6, 1, 1.0)
    assert r["pvalue"] == pytest.approx(2 * (math.comb(7, 0) + math.comb(7, 1)) / 2**7) == 0.125
    assert r["acc_a"] == 4 / 12 and r["acc_b"] == 9 / 12
    assert mcnemar_exact([True, False], [True, False])["pvalue"] == 1.0  # no discordant pairs
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])


def test_mcnemar_matches_binomial_test():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.random(40) < 0.4, rng.random(40) < 0.6
        r = mcnemar_exact(a, b)
        assert r["pvalue"] == pytest.approx(binomtest(r["b01"], r["b01"] + r["b10"]).pvalue)


def _scores():
    """Planted: without instruction 2/8 -> 6/8 steered; with instruction 6/8 -> 7/8."""
    rows = []
    for w, plain, steered in [
        (False, [1, 1, 0, 0, 0, 0, 0, 0], [1, 0, 1, 1, 1, 1, 1, 0]),
        (True, [1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0]),
    ]:
        for s, outcome in [(False, plain), (True, steered)]:
            rows += [
                {"key": f"p{i}", "with_instruction": w, "steered": s, "loose": bool(o)} for i, o in enumerate(outcome)
            ]
    return pd.DataFrame(rows)


COLS = dict(instruction_col="with_instruction", steering_col="steered", correct_col="loose")


def test_two_by_two():
    t = two_by_two(_scores(), pair_col="key", **COLS)
    assert list(t.columns) == ["with_instruction", "steered", "n", "successes", "accuracy", "ci_low", "ci_high"]
    assert list(zip(t.with_instruction, t.steered)) == [(False, False), (False, True), (True, False), (True, True)]
    assert list(t.n) == [8] * 4 and list(t.accuracy) == [2 / 8, 6 / 8, 6 / 8, 7 / 8]
    assert (t.ci_low.iloc[0], t.ci_high.iloc[0]) == accuracy_ci(2, 8)
    with pytest.raises(ValueError, match="repeat"):
        two_by_two(pd.concat([_scores(), _scores().iloc[:1]]), pair_col="key", **COLS)


def test_mcnemar_table_pairs_by_key():
    df = _scores().sample(frac=1, random_state=0)  # order must not matter, only the key
    m = mcnemar_table(df, pair_col="key", **COLS)
    no, yes = m.iloc[0], m.iloc[1]
    assert (no.n_pairs, no.n_unpaired, no.b01, no.b10) == (8, 0, 5, 1)
    assert no.pvalue == pytest.approx(2 * (1 + 6) / 2**6)
    assert (no.acc_unsteered, no.acc_steered) == (2 / 8, 6 / 8)
    assert (yes.b01, yes.b10, yes.pvalue) == (1, 0, 1.0)


def test_mcnemar_table_unpaired_and_labels():
    df = _scores()
    df = df[~((df.key == "p7") & df.steered)]  # p7 lost its steered run in both conditions
    df = df.assign(steered=df.steered.map({False: "plain", True: "steer"}))
    m = mcnemar_table(df, pair_col=["key"], baseline="plain", **COLS)
    assert list(m.n_pairs) == [7, 7] and list(m.n_unpaired) == [1, 1]
    with pytest.raises(ValueError, match="baseline"):
        mcnemar_table(df, pair_col="key", **COLS)  # baseline False is not a value here


def test_clustered_interval_counts_clusters_not_lines():
    """One outcome repeated five times per cluster carries the information of one outcome per
    cluster: the interval matches Wilson's over the 60 clusters, not over the 300 lines, and is
    wider than the naive one. Independent lines (clusters of mixed outcomes) keep Wilson's width."""
    rng = np.random.default_rng(3)
    clusters = np.repeat(np.arange(60), 5)
    per_cluster = rng.random(60) < 0.4
    copied = np.repeat(per_cluster, 5)
    low, high = clustered_accuracy_ci(copied, clusters)
    w_low, w_high = accuracy_ci(int(per_cluster.sum()), 60)
    naive = accuracy_ci(int(copied.sum()), 300)
    assert low < copied.mean() < high
    assert (high - low) == pytest.approx(w_high - w_low, rel=0.2)
    assert (high - low) > 1.5 * (naive[1] - naive[0])
    independent = rng.random(300) < 0.4
    low, high = clustered_accuracy_ci(independent, clusters)
    n_low, n_high = accuracy_ci(int(independent.sum()), 300)
    assert (high - low) == pytest.approx(n_high - n_low, rel=0.25)


def test_clustered_interval_without_spread_falls_back_to_wilson_over_clusters():
    assert clustered_accuracy_ci([True] * 10, [0] * 5 + [1] * 5) == pytest.approx(accuracy_ci(2, 2))
    assert clustered_accuracy_ci([True, False], ["a", "a"]) == pytest.approx(accuracy_ci(0.5, 1))
    assert accuracy_ci(0.5, 1)[0] < 0.5 < accuracy_ci(0.5, 1)[1]
