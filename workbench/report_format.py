"""The format experiment's report section: the four conditions beside the paper's Table 1, per
instruction with the chosen settings, fluency, and the search round by round.

In a notebook:

    for title, text, figures in format_sections(state, run): ...
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from workbench.report_tables import Section, State, condition_label, md_table, search_section

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


def format_sections(state: State, run: Path) -> list[Section]:
    from workbench import plots

    tables = run / "tables"
    sections: list[Section] = []
    if (tables / "two_by_two_loose.csv").exists():
        tbl = pd.read_csv(tables / "two_by_two_loose.csv")
        ours = {
            condition_label(bool(w), bool(s)): a
            for w, s, a in zip(tbl["with_instruction"], tbl["steered"], tbl["accuracy"], strict=True)
        }
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
    search = search_section(state, run, "search", ["instruction_id", "with_instruction"])
    if search is not None:
        sections.append(search)
    return sections
