"""Report sections of every experiment, in one plain registry (BUILDERS, at the end) that
workbench.report imports. Each reads the tables its run wrote and sets the paper's numbers
(PAPER.md) beside ours.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from workbench.report_format import format_sections
from workbench.report_tables import (
    Builder,
    Section,
    State,
    choices_section,
    md_table,
    need,
    read_table,
    search_section,
    when_written,
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


def length_sections(state: State, run: Path, loose: pd.DataFrame) -> list[Section]:
    """The length experiment's sections (workbench.report_length)."""
    from workbench.report_length import length_sections as sections

    return sections(state, run, loose)


def _present(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """`keys`, then loose accuracy and the rates beside it in every keyword table (those a run
    has: runs before the joint search have no `good`)."""
    rates = ["raw_weight", "n", "accuracy", "good", "word_match", "ppl_median", "degenerate", "distinct_2"]
    return df[keys + [c for c in rates if c in df and c not in keys]]


def keywords_sections(state: State, run: Path, head: pd.DataFrame) -> list[Section]:
    from workbench import plots

    wide = head.pivot_table(index=["arm", "with_instruction"], columns="steered", values="accuracy").reset_index()
    wide.columns = ["arm", "with_instruction", "plain", "steered"]
    setting = head[head["steered"]][["arm", "with_instruction", "layer", "weight"]]
    beside = wide.merge(setting, on=["arm", "with_instruction"]).merge(
        PAPER_KEYWORDS, on=["arm", "with_instruction"], how="left"
    )
    text = (
        "Loose IFEval accuracy on the test prompts, no steering vs the layer and weight chosen on "
        "validation (layer -1: the search kept no steering; the paper's Phi-3-mini numbers "
        "beside; exclude_vector, the exclusion instruction's own vector, is not in the paper's "
        "table because it does not work):\n\n"
        + md_table(beside)
        + "\n\nWith intervals, good (followed and not degenerate, what the search selects on), "
        "the word-boundary match and fluency:\n\n"
        + md_table(_present(head, ["arm", "with_instruction", "steered", "n", "accuracy", "ci_low", "ci_high"]))
    )
    sections: list[Section] = [("Include / exclude a word", text, [])]
    sweep, match = need(run, "weight_sweep_loose"), need(run, "weight_sweep_word_match")
    figs = []
    for (arm, with_instruction), g in sweep.groupby(["arm", "with_instruction"]):
        fig = plots.weight_sweep(g, quality="ppl_median")
        fig.update_layout(
            title=f"{arm}, {'with' if with_instruction else 'without'} the instruction: "
            f"accuracy and perplexity vs weight"
        )
        figs.append(fig)
    table = _present(sweep.assign(word_match=match["accuracy"]), ["arm", "with_instruction", "layer", "weight"])
    sections.append(
        (
            "Accuracy and fluency vs weight (test prompts, at the chosen layer)",
            "Where the search kept no steering, the sweep runs at its best steered finalist's layer.\n\n"
            + md_table(table),
            figs,
        )
    )
    search = search_section(state, run, "search", ["arm", "with_instruction"])
    choices = read_table(run, "search_choices")
    if search is not None and choices is not None:
        title, text, figs = search
        text += "\n\nThe choices (weight in percent of the residual norm, or raw; sweep_layer: the test sweep's):\n\n"
        sections.append((title, text + md_table(choices), figs))
    return sections


def composition_sections(state: State, run: Path, cond: pd.DataFrame) -> list[Section]:
    # colour: the condition; symbol: the arm (text labels of eight nearby points overlapped)
    symbols = dict(none="circle", format="square", length="diamond", both="star")
    fig = go.Figure()
    for (with_instruction, arm), g in cond.groupby(["with_instruction", "arm"]):
        condition = "instructions in prompt" if with_instruction else "no instructions"
        fig.add_trace(
            go.Scatter(
                x=g["format_accuracy"],
                y=g["length_accuracy"],
                mode="markers",
                marker=dict(
                    symbol=symbols.get(str(arm), "circle"),
                    size=13,
                    color="#d62728" if with_instruction else "#1f77b4",
                    line=dict(width=1, color="white"),
                ),
                name=f"{condition}: {arm}",
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
        xaxis=dict(title="format accuracy", range=[-0.02, min(1.02, float(cond["format_ci_high"].max()) + 0.05)]),
        yaxis=dict(title="length accuracy", range=[-0.02, 1.02]),
    )
    length = state["choices"].get("length", {})
    chosen = pd.DataFrame(state["choices"].get("chosen", []))
    text = (
        f"Conciseness vector: `add` at layer {length.get('layer')}, c = {length.get('c')} "
        f"({length.get('unit')}; raw {length.get('raw', float('nan')):.3g}); format vectors: at the "
        f"setting searched on validation prompts per instruction and condition (below). Loose IFEval "
        f"verdicts; `both` = every instruction followed; `good` = both and not degenerate (what the "
        f"search selects on). The paper shows composition as figures only (no numbers in PAPER.md).\n\n"
        + md_table(
            cond[
                [
                    "with_instruction",
                    "arm",
                    "n",
                    "format_accuracy",
                    "length_accuracy",
                    "both_accuracy",
                    *(["good_accuracy"] if "good_accuracy" in cond else []),
                    "n_tokens",
                    "degenerate",
                ]
            ]
        )
        + ("\n\nFormat vector settings chosen:\n\n" + md_table(chosen) if len(chosen) else "")
    )
    sections = [("Format and length at once: (format accuracy, length accuracy) per condition", text, [fig])]
    per = need(run, "per_instruction")
    sections.append(
        (
            "Per format instruction",
            md_table(per[["format_instruction", "with_instruction", "arm", "n", "format_accuracy", "length_accuracy"]]),
            [],
        )
    )
    search = search_section(state, run, "search", ["instruction_id", "with_instruction"])
    # a run of the previous method (analyses/composition/run until re-run): its layer search
    search = search or choices_section(run, "layer_search", ["instruction_id", "with_instruction"])
    return sections + ([search] if search else [])


def transfer_sections(state: State, run: Path, cond: pd.DataFrame) -> list[Section]:
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
    good = read_table(run, "conditions_good")
    shown = cond[["with_instruction", "arm", "n", "accuracy", "ci_low", "ci_high", "degenerate"]]
    if good is not None:  # followed and not degenerate: what the search selects on
        shown = shown.merge(good[["with_instruction", "arm", "accuracy"]].rename(columns={"accuracy": "good"}))
    chosen = pd.DataFrame(state["choices"].get("chosen", []))
    mode = state["identity"]["config"].get("mode", "adjust")
    text = (
        f"Loose IFEval accuracy: target alone / the target's own vector / the source's vector, "
        f"each at the setting (layer, `{mode}` strength) searched on the target per vector "
        f"source, instruction and condition (the paper's rows: Gemma-2 base steered with its "
        f"own and with the instruction-tuned model's vectors).\n\n"
        + md_table(table)
        + "\n\nWith intervals; good = followed and not degenerate:\n\n"
        + md_table(shown)
        + "\n\n"
        + _paired(run)
        + note
        + ("\n\nSettings chosen:\n\n" + md_table(chosen) if len(chosen) else "")
    )
    sections = [("Transfer: the paper's table", text, [fig])]
    per = need(run, "per_instruction_loose")
    per_wide = per.pivot_table(
        index=["instruction_id", "with_instruction"], columns="arm", values="accuracy"
    ).reset_index()
    sections.append(("Per instruction (loose accuracy)", md_table(per_wide), []))
    search = search_section(state, run, "search", ["arm", "instruction_id", "with_instruction"])
    pairs = json.dumps(state["choices"].get("layer_pairs", []))
    if search:
        sections.append((search[0], search[1] + f"\n\nTarget layer <- source layer: {pairs}", search[2]))
    return sections


def _paired(run: Path) -> str:
    """Each vector source against the target alone (exact McNemar per condition and metric),
    where the run wrote the tables; '' for runs before them."""
    tables = [(m, read_table(run, f"mcnemar_{m}")) for m in ("loose", "good")]
    found = [t.assign(metric=m) for m, t in tables if t is not None]
    if not found:
        return ""
    cols = ["arm", "with_instruction", "metric", "n_pairs", "acc_unsteered", "acc_steered", "b01", "b10", "pvalue"]
    paired = pd.concat(found)[cols].rename(columns={"acc_unsteered": "target alone", "acc_steered": "with vector"})
    title = "Each vector against the target alone, paired by prompt (exact McNemar; b01 gained, b10 lost):"
    return f"{title}\n\n{md_table(paired)}\n\n"


BUILDERS: dict[str, Builder] = {
    "format": format_sections,
    "length": when_written("by_weight_loose", length_sections),
    "keywords": when_written("headline", keywords_sections),
    "composition": when_written("conditions", composition_sections),
    "transfer": when_written("conditions_loose", transfer_sections),
}
