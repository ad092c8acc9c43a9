"""Report sections of every experiment, in one plain registry (BUILDERS, at the end) that
workbench.report imports. Each reads the tables its run wrote and sets the paper's numbers
(PAPER.md) beside ours.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from workbench.report_tables import Section, condition_label, md_table, table

# The paper's Table 1 (IFEval single-instruction format prompts, loose accuracy).
PAPER_FORMAT = pd.DataFrame(
    [
        ("Phi-3-mini", 0.110, 0.307, 0.699, 0.785),
        ("Gemma-2-2B-IT", 0.129, 0.307, 0.693, 0.761),
        ("Mistral-7B-Instruct", 0.067, 0.141, 0.626, 0.638),
        ("Gemma-2-9B-IT", 0.123, 0.288, 0.865, 0.865),
    ],
    columns=["model", "no_instr", "no_instr_steered", "instr", "instr_steered"],
)


PAPER_KEYWORDS = pd.DataFrame(
    [
        ("include", False, 0.291, 0.407),
        ("include", True, 0.895, 0.953),
        ("exclude_subtract", False, 0.641, 0.855),
        ("exclude_subtract", True, 0.863, 0.932),
    ],
    columns=["arm", "with_instruction", "paper_plain", "paper_steered"],
)
PAPER_TRANSFER = pd.DataFrame(
    [
        ("Gemma-2-2B (IT vectors)", False, 0.117, 0.123, 0.153),
        ("Gemma-2-2B (IT vectors)", True, 0.233, 0.343, 0.423),
        ("Gemma-2-9B (IT vectors)", False, 0.123, 0.215, 0.202),
        ("Gemma-2-9B (IT vectors)", True, 0.540, 0.522, 0.571),
    ],
    columns=["model", "with_instruction", "none", "own", "source"],
)


_csv = table


def _choices(run: Path, name: str, keys: list[str], value: str = "layer") -> Section | None:
    table = _csv(run, f"{name}_choices")
    if table is None:
        return None
    text = f"No steering is {value} -1 (layer) or 0 (weight).\n\n" + md_table(
        table[[*keys, value, "accuracy", "no_steering_accuracy", "reason"]]
    )
    return (f"{name.replace('_', ' ').capitalize()} on validation prompts", text, [])


def _when(name: str, fn):
    """The builder of `fn`, run once tables/{name}.csv exists (an interrupted run has no
    sections yet) and given that table."""

    def build(state: dict, run: Path) -> list[Section]:
        df = _csv(run, name)
        return [] if df is None else fn(state, run, df)

    return build


def _lines(
    df: pd.DataFrame, x: str, y: str, series: list[str], title: str, y_title: str, *, also: dict[str, str] | None = None
) -> go.Figure:
    """One line per `series` group; accuracy with its interval (ci_low, ci_high) as error bars;
    `also` {column: label} adds a dashed line of that column per group."""
    fig = go.Figure()
    for i, (key, g) in enumerate(df.groupby(series, sort=True)):
        key = key if isinstance(key, tuple) else (key,)
        g, name = g.sort_values(x), ", ".join(f"{s}={k}" for s, k in zip(series, key))
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


def length_sections(state: dict, run: Path, loose: pd.DataFrame) -> list[Section]:
    count = _csv(run, "by_weight_at_most_n")
    choices = state["choices"]
    table = loose[
        [
            "arm",
            "with_instruction",
            "weight",
            "n",
            *(["n_clusters"] if "n_clusters" in loose else []),
            "accuracy",
            "ci_low",
            "ci_high",
            *(["loose_not_degenerate"] if "loose_not_degenerate" in loose else []),
            "n_sentences",
            "n_words",
            "ppl_median",
            "degenerate",
        ]
    ].assign(count_accuracy=count["accuracy"])
    weights = pd.DataFrame(choices.get("weights", []))
    by_n = _csv(run, "by_n_loose")
    wide = by_n.pivot_table(index=["with_instruction", "max_n"], columns="weight", values="accuracy").reset_index()
    wide.columns = [c if isinstance(c, str) else f"c={c:g}" for c in wide.columns]
    instr = by_n[by_n["with_instruction"]]
    plain, steered = instr[instr["weight"] == 0], instr[instr["weight"] == 20]
    span = lambda d: f"{d['accuracy'].min():.3f}-{d['accuracy'].max():.3f}"
    ours = f"{span(plain)} -> {span(steered)}" if len(steered) else "c = 20 is not in the grid"
    text = (
        f"Layer {choices.get('layer')}; weights in unit `{weights['unit'].iloc[0] if len(weights) else '?'}` "
        f"(raw = what the hook adds along the unit vector):\n\n" + md_table(weights) + "\n\n"
        "Accuracy: IFEval loose (number_sentences, relation 'less than' n + 1); count_accuracy: "
        "count_sentences(response) <= n; loose_not_degenerate: followed and not a loop (a loop cut at the "
        "token limit can pass, having ended no sentence). Means are over responses. The lines of one base query are "
        "correlated (without the instruction, one response is scored at every n), so the 95% "
        "intervals resample base queries (n_clusters), not lines.\n\n"
        + md_table(table)
        + "\n\nLoose accuracy per n (rows) and weight (columns):\n\n"
        + md_table(wide)
        + f"\n\nThe paper (Phi-3-mini, instruction present, at most n = 1..5, c = 20 at layer 12): "
        f".675-.725 -> .795-.87. This run, instruction present, weight 0 -> c = 20 over n: {ours}."
    )
    series = ["arm", "with_instruction"]
    figs = [
        _lines(
            loose,
            "weight",
            "accuracy",
            series,
            "Accuracy vs weight",
            "loose accuracy",
            also={"loose_not_degenerate": "not a loop"},
        ),
        _lines(loose, "weight", "n_sentences", series, "Mean sentences vs weight", "sentences"),
    ]
    sections = [("Answer using at most n sentences: accuracy and length vs weight", text, figs)]
    cos = _csv(run, "class_cosines")
    if cos is not None:
        square = cos.pivot(index="a", columns="b", values="cosine").reset_index()
        sections.append(("Length-class vectors: cosine at the steering layer", md_table(square), []))
    return sections


def keywords_sections(state: dict, run: Path, head: pd.DataFrame) -> list[Section]:
    from workbench import plots

    wide = head.pivot_table(index=["arm", "with_instruction"], columns="steered", values="accuracy").reset_index()
    wide.columns = ["arm", "with_instruction", "plain", "steered"]
    setting = head[head["steered"]][["arm", "with_instruction", "layer", "weight"]]
    beside = wide.merge(setting, on=["arm", "with_instruction"]).merge(
        PAPER_KEYWORDS, on=["arm", "with_instruction"], how="left"
    )
    text = (
        "Loose IFEval accuracy on the test prompts, no steering vs the layer and weight chosen on "
        "validation (the paper's Phi-3-mini numbers beside; exclude_vector, the exclusion "
        "instruction's own vector, is not in the paper's table because it does not work):\n\n"
        + md_table(beside)
        + "\n\nWith intervals and the word-boundary match:\n\n"
        + md_table(
            head[
                [
                    "arm",
                    "with_instruction",
                    "steered",
                    "n",
                    "accuracy",
                    "ci_low",
                    "ci_high",
                    "word_match",
                    "ppl_median",
                    "degenerate",
                ]
            ]
        )
    )
    sections = [("Include / exclude a word", text, [])]
    sweep, match = _csv(run, "weight_sweep_loose"), _csv(run, "weight_sweep_word_match")
    figs = []
    for (arm, with_instruction), g in sweep.groupby(["arm", "with_instruction"]):
        fig = plots.weight_sweep(g, quality="ppl_median")
        fig.update_layout(
            title=f"{arm}, {'with' if with_instruction else 'without'} the instruction: "
            f"accuracy and perplexity vs weight"
        )
        figs.append(fig)
    table = sweep[
        [
            "arm",
            "with_instruction",
            "layer",
            "weight",
            "raw_weight",
            "n",
            "accuracy",
            "ppl_median",
            "degenerate",
            "distinct_2",
        ]
    ].assign(word_match=match["accuracy"])
    sections.append(("Accuracy and fluency vs weight (test prompts, at the chosen layer)", md_table(table), figs))
    sections += [
        s
        for s in (
            _choices(run, "layer_search", ["arm", "with_instruction"]),
            _choices(run, "weight_search", ["arm", "with_instruction"], "weight"),
        )
        if s
    ]
    return sections


def composition_sections(state: dict, run: Path, cond: pd.DataFrame) -> list[Section]:
    fig = go.Figure()
    for with_instruction, g in cond.groupby("with_instruction"):
        fig.add_trace(
            go.Scatter(
                x=g["format_accuracy"],
                y=g["length_accuracy"],
                text=g["arm"],
                mode="markers+text",
                textposition="top center",
                name="instructions in prompt" if with_instruction else "no instructions",
                error_x=dict(
                    type="data",
                    array=g["format_ci_high"] - g["format_accuracy"],
                    arrayminus=g["format_accuracy"] - g["format_ci_low"],
                    thickness=1,
                ),
                error_y=dict(
                    type="data",
                    array=g["length_ci_high"] - g["length_accuracy"],
                    arrayminus=g["length_accuracy"] - g["length_ci_low"],
                    thickness=1,
                ),
            )
        )
    fig.update_layout(
        title="Format accuracy vs length accuracy per condition",
        xaxis=dict(title="format accuracy", range=[-0.05, 1.05]),
        yaxis=dict(title="length accuracy", range=[-0.05, 1.05]),
    )
    length = state["choices"].get("length", {})
    text = (
        f"Conciseness vector: `add` at layer {length.get('layer')}, c = {length.get('c')} "
        f"({length.get('unit')}; raw {length.get('raw', float('nan')):.3g}); format vectors: `adjust` at "
        f"the layer searched on validation prompts (below). Loose IFEval verdicts; `both` = every "
        f"instruction followed. The paper shows composition as figures only (no numbers in PAPER.md).\n\n"
        + md_table(
            cond[
                [
                    "with_instruction",
                    "arm",
                    "n",
                    "format_accuracy",
                    "length_accuracy",
                    "both_accuracy",
                    "n_tokens",
                    "degenerate",
                ]
            ]
        )
    )
    sections = [("Format and length at once: (format accuracy, length accuracy) per condition", text, [fig])]
    per = _csv(run, "per_instruction")
    sections.append(
        (
            "Per format instruction",
            md_table(per[["format_instruction", "with_instruction", "arm", "n", "format_accuracy", "length_accuracy"]]),
            [],
        )
    )
    choice = _choices(run, "layer_search", ["instruction_id", "with_instruction"])
    return sections + ([choice] if choice else [])


def transfer_sections(state: dict, run: Path, cond: pd.DataFrame) -> list[Section]:
    source = state["choices"].get("source", {}).get("name", "source")
    wide = cond.pivot(index="with_instruction", columns="arm", values="accuracy").reset_index()
    ours = wide.assign(model=f"{state['model_info']['name']} (this run; {source} vectors)")
    table = pd.concat([PAPER_TRANSFER, ours[["model", "with_instruction", "none", "own", "source"]]])
    fig = go.Figure(
        [
            go.Bar(x=["no instruction", "instruction"], y=wide[arm], name=label)
            for arm, label in (
                ("none", "target alone"),
                ("own", "target's own vector"),
                ("source", f"{source}'s vector"),
            )
        ]
    )
    fig.update_layout(barmode="group", title="Loose accuracy on the target", yaxis_range=[0, 1])
    maps = state["choices"].get("linear_maps")
    z_from = state["identity"]["config"].get("z_bar_from")
    note = (
        "Widths differ: source directions mapped by linear maps (held-out R² per layer pair below), "
        "z-bar recomputed on the target.\n\n" + md_table(pd.DataFrame(maps))
        if maps
        else f"Equal widths: source directions used as they are (z-bar from the {z_from})."
    )
    text = (
        "Loose IFEval accuracy: target alone / the target's own vector / the source's vector, "
        "each at the layer searched on the target (the paper's rows: Gemma-2 base steered with its "
        "own and with the instruction-tuned model's vectors).\n\n"
        + md_table(table)
        + "\n\n"
        + md_table(cond[["with_instruction", "arm", "n", "accuracy", "ci_low", "ci_high", "degenerate"]])
        + "\n\n"
        + note
    )
    sections = [("Transfer: the paper's table", text, [fig])]
    per = _csv(run, "per_instruction_loose")
    per_wide = per.pivot_table(
        index=["instruction_id", "with_instruction"], columns="arm", values="accuracy"
    ).reset_index()
    sections.append(("Per instruction (loose accuracy)", md_table(per_wide), []))
    choice = _choices(run, "layer_search", ["arm", "instruction_id", "with_instruction"])
    pairs = json.dumps(state["choices"].get("layer_pairs", []))
    if choice:
        sections.append((choice[0], choice[1] + f"\n\nTarget layer <- source layer: {pairs}", []))
    return sections


def format_sections(state: dict, run: Path) -> list[Section]:
    from workbench import plots

    tables = run / "tables"
    sections = []
    if (tables / "two_by_two_loose.csv").exists():
        tbl = pd.read_csv(tables / "two_by_two_loose.csv")
        ours = {condition_label(r.with_instruction, r.steered): r.accuracy for r in tbl.itertuples()}
        beside = pd.concat(
            [PAPER_FORMAT, pd.DataFrame([{"model": f"{state['model_info']['name']} (this run)", **ours}])]
        )
        fig = plots.two_by_two_bars(tbl.rename(columns={"with_instruction": "instruction_in_prompt"}))
        text = ""
        for metric, what in (("loose", "loose accuracy"), ("good", "followed and not degenerate")):
            if not (tables / f"two_by_two_{metric}.csv").exists():
                continue
            t = pd.read_csv(tables / f"two_by_two_{metric}.csv")
            mc = pd.read_csv(tables / f"mcnemar_{metric}.csv")
            text += (
                f"**{what}** (95% Wilson intervals):\n\n"
                + md_table(t[["with_instruction", "steered", "n", "accuracy", "ci_low", "ci_high"]])
                + "\n\nExact McNemar, steered vs unsteered, paired by prompt:\n\n"
                + md_table(mc[["with_instruction", "n_pairs", "acc_unsteered", "acc_steered", "b01", "b10", "pvalue"]])
                + "\n\n"
            )
        text += "Beside the paper's Table 1 (loose accuracy; the paper's models are 20-50x larger):\n\n" + md_table(
            beside
        )
        sections.append(("Test set: the four conditions", text, [fig]))
        per = pd.read_csv(tables / "per_instruction_loose.csv")
        per["condition"] = [condition_label(a, b) for a, b in zip(per.with_instruction, per.steered)]
        wide = per.pivot(index="instruction_id", columns="condition", values="accuracy").reset_index()
        counts = per.groupby("instruction_id")["n"].max().rename("n").reset_index()
        wide = wide.merge(counts, on="instruction_id")
        if "layer" in per:  # the setting each condition's search chose
            for w, name in ((False, "chosen_no_instr"), (True, "chosen_instr")):
                c = per[per.with_instruction == w].drop_duplicates("instruction_id")
                label = [
                    ("none" if l < 0 else f"{m} L{l:.0f} x{s:g}")
                    for l, m, s in zip(c["layer"], c["mode"], c["strength"])
                ]
                wide = wide.merge(
                    pd.DataFrame({"instruction_id": c["instruction_id"], name: label}), on="instruction_id", how="left"
                )
        bars = go.Figure(
            [
                go.Bar(x=wide["instruction_id"], y=wide[c], name=c)
                for c in ["no_instr", "no_instr_steered", "instr", "instr_steered"]
                if c in wide
            ]
        )
        bars.update_layout(barmode="group", title="Loose accuracy per instruction", yaxis_range=[0, 1])
        sections.append(("Per instruction (loose accuracy) and the chosen settings", md_table(wide), [bars]))
    if (tables / "fluency.csv").exists():
        flu = pd.read_csv(tables / "fluency.csv")
        sections.append(
            (
                "Fluency of the test responses",
                "Perplexity of each response alone under the unsteered model; degenerate = "
                "empty or looping (workbench.fluency.is_degenerate); cut_at_limit = share "
                "stopped by max_new_tokens.\n\n" + md_table(flu),
                [],
            )
        )
    if (tables / "search_rounds.csv").exists():
        rounds = pd.read_csv(tables / "search_rounds.csv")
        choices = pd.read_csv(tables / "search_choices.csv")
        plan = state["choices"].get("search_plan", {})
        figs = [
            plots.search_rounds(g, title=f"Search: {iid}") for iid, g in rounds.groupby("instruction_id", sort=False)
        ]
        last = rounds[rounds["round"] == rounds["round"].max()]
        final = last.merge(
            choices[["instruction_id", "with_instruction", "label"]].rename(columns={"label": "chosen"}),
            on=["instruction_id", "with_instruction"],
        )
        final = final[(final["label"] == final["chosen"]) | (final["label"] == "none")]
        text = (
            f"Successive halving over {len(plan.get('candidates', []))} candidates, prompts per "
            f"round {plan.get('prompts')}, steered candidates kept {plan.get('keep')}; selected on "
            f"followed (loose) and not degenerate; steering must beat no steering strictly.\n\n"
            + md_table(final[["instruction_id", "with_instruction", "label", "n", "good", "loose", "degenerate"]])
        )
        sections.append(("The search on validation prompts", text, figs))
    return sections


BUILDERS = {
    "format": format_sections,
    "length": _when("by_weight_loose", length_sections),
    "keywords": _when("headline", keywords_sections),
    "composition": _when("conditions", composition_sections),
    "transfer": _when("conditions_loose", transfer_sections),
}
