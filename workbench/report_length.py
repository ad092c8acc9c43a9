"""The length experiment's report sections: the headline (no steering vs the setting the search
chose), the search itself, accuracy and length vs weight at each curve's layer, and the length
classes' cosines. report_sections.BUILDERS calls `length_sections` once tables/by_weight_loose.csv
exists.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from workbench.report_tables import Section, State, lines_figure, md_table, need, read_table, search_section


def length_sections(state: State, run: Path, loose: pd.DataFrame) -> list[Section]:
    sections = [_headline(state, run)]
    search = search_section(state, run, "search", ["arm", "with_instruction"])
    if search is not None:
        sections.append(search)
    count = need(run, "by_weight_at_most_n")
    columns = [
        c
        for c in [
            "arm",
            "with_instruction",
            "curve_layer",
            "weight",
            "n",
            "n_clusters",
            "accuracy",
            "ci_low",
            "ci_high",
            "loose_not_degenerate",
            "n_sentences",
            "n_words",
            "ppl_median",
            "degenerate",
        ]
        if c in loose  # a run made before the search has no curve_layer
    ]
    table = loose[columns].assign(count_accuracy=count["accuracy"])
    by_n = need(run, "by_n_loose")
    index = ["arm", "with_instruction", "max_n"]
    wide = by_n.pivot_table(index=index, columns="weight", values="accuracy").reset_index()
    wide.columns = [c if isinstance(c, str) else f"c={c:g}" for c in wide.columns]
    instr = by_n[by_n["with_instruction"]]
    plain, steered = instr[instr["weight"] == 0], instr[instr["weight"] == 20]

    def span(d: pd.DataFrame) -> str:
        return f"{d['accuracy'].min():.3f}-{d['accuracy'].max():.3f}"

    ours = f"{span(plain)} -> {span(steered)}" if len(steered) else "c = 20 is not in the grid"
    text = (
        "Accuracy: IFEval loose; count_accuracy: count_sentences(response) <= n; "
        "loose_not_degenerate (good): followed and not a loop (a loop cut at the token limit can "
        "pass, having ended no sentence). Means are over responses. Without the instruction one "
        "response is scored at every n, so the 95% intervals resample base queries (n_clusters), "
        "not lines.\n\n"
        + md_table(table)
        + "\n\nLoose accuracy per n (rows) and weight (columns):\n\n"
        + md_table(wide)
        + f"\n\nThe paper (Phi-3-mini, instruction present, at most n = 1..5, c = 20 at layer 12): "
        f".675-.725 -> .795-.87. This run, instruction present, weight 0 -> c = 20 over n: {ours}."
    )
    series = ["arm", "with_instruction"]
    figs = [
        lines_figure(
            loose,
            "weight",
            "accuracy",
            series,
            "Accuracy vs weight",
            "loose accuracy",
            also={"loose_not_degenerate": "not a loop"},
        ),
        lines_figure(loose, "weight", "n_sentences", series, "Mean sentences vs weight", "sentences"),
    ]
    sections.append(("Accuracy and length vs weight (test prompts, at each curve's layer)", text, figs))
    cos = read_table(run, "class_cosines")
    if cos is not None and "layer" not in cos:  # a run made before the search: one layer
        cos = cos.assign(layer=state["choices"].get("layer", -1))
    if cos is not None:
        curves = {int(v) for v in loose.get("curve_layer", []) if v >= 0}
        layers = sorted(curves & set(cos["layer"])) or [cos["layer"].min()]
        squares = [
            f"Layer {layer}:\n\n"
            + md_table(cos[cos["layer"] == layer].pivot(index="a", columns="b", values="cosine").reset_index())
            for layer in layers
        ]
        sections.append(("Length-class vectors: cosine at the curves' layers", "\n\n".join(squares), []))
    return sections


def _headline(state: State, run: Path) -> Section:
    """No steering vs the search's choice, or, for a run made before the search (one fixed layer,
    no tables/headline.csv), a note saying so."""
    head, choices = read_table(run, "headline"), read_table(run, "search_choices")
    title = "Answer using at most n sentences: no steering vs the search's choice"
    if head is None or choices is None:
        layer = state["choices"].get("layer")
        return (
            "Answer using at most n sentences",
            f"This run predates the search: it steers at one fixed layer ({layer}) over the weight grid.",
            [],
        )
    rates = [f"{m}{s}" for m in ("good", "loose", "degenerate") for s in ("", "_ci_low", "_ci_high")]
    text = (
        "Test prompts, no steering vs the (layer, weight) the search chose on validation prompts "
        "for each direction and condition (`steered` = none where it chose no steering). good = "
        "followed (IFEval loose, number_sentences 'less than' n + 1) and not degenerate, what the "
        "search selects on; 95% Wilson intervals over the lines (n), which are correlated within "
        "a base query (n_queries; the tables per weight below resample queries):\n\n"
        + md_table(head[["arm", "with_instruction", "steered", "setting", "n", "n_queries", *rates, "n_sentences"]])
        + "\n\nThe choices (weight in `unit`; raw = what the hook adds along the unit vector; the "
        "weight curve below runs at curve_layer, the best steered finalist's where no steering "
        "was chosen):\n\n" + md_table(choices)
    )
    return (title, text, [])
