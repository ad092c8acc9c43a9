"""The length experiment's choices and tables: the search's
choices with their raw weights, the headline (no steering vs the chosen setting, Wilson
intervals), accuracy per weight and per n (intervals over base queries), and the cosines of the
length classes' vectors.

In a notebook:

    curve = sweep_layers(run.state["choices"]["search_rounds"], chosen, ["arm", "with_instruction"])
    write_tables(run, scored, vectors, chosen, curve, layers)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

import workbench as wb
from workbench.experiments.grid import NONE, accuracy_table, raw_weight
from workbench.experiments.rundir import RunDir
from workbench.experiments.search import Candidate

Group = tuple[str, bool]  # (direction, with_instruction)


def choices_table(
    chosen: Mapping[Group, Candidate], curve: Mapping[Group, int | None], norms: dict[int, float], unit: str
) -> pd.DataFrame:
    """One line per group: the chosen candidate (weight in `unit`, and the raw weight the hook
    adds) and the layer of its test weight curve (-1: none) with the reason."""
    lines = []
    for (arm, with_instruction), c in chosen.items():
        layer = curve[(arm, with_instruction)]
        reason = "chosen" if c.steered else "best steered finalist" if layer is not None else "no steered candidate"
        lines.append(
            dict(
                arm=arm,
                with_instruction=with_instruction,
                layer=c.layer,
                mode=c.mode,
                weight=c.strength,
                label=c.label,
                raw_weight=raw_weight(c.strength, c.layer, norms, unit) if c.steered else 0.0,
                unit=unit,
                curve_layer=NONE if layer is None else layer,
                curve_reason=reason,
            )
        )
    return pd.DataFrame(lines)


def headline(scored: pd.DataFrame, chosen: Mapping[Group, Candidate]) -> pd.DataFrame:
    """Per (arm, with_instruction): no steering and the chosen setting on the test prompts (its
    no-steering lines again where the search chose none), with good (followed and not
    degenerate), loose and degenerate rates, each with a Wilson interval over the lines."""
    from workbench.stats import accuracy_ci

    lines = []
    for (arm, with_instruction), g in scored.groupby(["arm", "with_instruction"], sort=True):
        c = chosen[(str(arm), bool(with_instruction))]
        plain = g[g["weight"] == 0]
        steered = g[(g["layer"] == c.layer) & (g["weight"] == c.strength)] if c.steered else plain
        for is_steered, part in ((False, plain), (True, steered)):
            line: dict[str, Any] = dict(
                arm=arm,
                with_instruction=with_instruction,
                steered=is_steered,
                setting=c.label if is_steered else "none",
                n=len(part),
                n_queries=int(part["query"].nunique()),
            )
            for metric, column in (("good", "loose_not_degenerate"), ("loose", "loose"), ("degenerate", "degenerate")):
                k = int(part[column].astype(bool).sum())
                low, high = accuracy_ci(k, len(part))
                line.update({metric: k / len(part), f"{metric}_ci_low": low, f"{metric}_ci_high": high})
            line.update(n_sentences=float(part["n_sentences"].mean()), n_tokens=float(part["n_tokens"].mean()))
            lines.append(line)
    return pd.DataFrame(lines)


def write_tables(
    run: RunDir,
    scored: pd.DataFrame,
    vectors: dict[str, wb.SteeringVector],
    chosen: Mapping[Group, Candidate],
    curve: Mapping[Group, int | None],
    layers: Sequence[int],
) -> None:
    """tables/headline.csv; accuracy (loose, and by sentence count) per weight and per n at each
    curve's layer, with intervals over base queries; the length classes' cosines at every
    candidate layer."""
    headline(scored, chosen).to_csv(run.file("tables", "headline.csv"), index=False)
    at = pd.DataFrame(
        [dict(arm=a, with_instruction=w, curve_layer=NONE if v is None else v) for (a, w), v in curve.items()]
    )
    means = ("loose_not_degenerate", "n_sentences", "n_words", "n_tokens")
    # a weight-0 line counts once per direction (its generation is shared). The lines of one base
    # query are correlated (without the instruction they are one response scored at every n), so
    # intervals resample queries
    for by, name in (
        (["arm", "with_instruction", "weight"], "by_weight"),
        (["arm", "with_instruction", "weight", "max_n"], "by_n"),
    ):
        for metric in ("loose", "at_most_n"):
            table = accuracy_table(scored, by, metric=metric, means=means, cluster="query")
            table = table.merge(at, on=["arm", "with_instruction"], how="left")
            table.to_csv(run.file("tables", f"{name}_{metric}.csv"), index=False)
    names = list(vectors)
    cos = []
    for layer in layers:
        units = {c: vectors[c].direction(layer) for c in names}
        cos += [dict(layer=layer, a=a, b=b, cosine=float(units[a] @ units[b])) for a in names for b in names]
    pd.DataFrame(cos).to_csv(run.file("tables", "class_cosines.csv"), index=False)
