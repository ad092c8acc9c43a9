"""The report of a run directory: a self-contained HTML page (plotly.js embedded, readable
offline) and a Markdown summary, rebuilt from the files the run wrote.

    workbench report runs/format          # or wb.report.write_report("runs/format")

Each experiment registers a section builder: (run.json state, run directory) ->
list of (title, markdown, [figures]).
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Callable

import pandas as pd
import plotly.graph_objects as go

Section = tuple[str, str, list[go.Figure]]
BUILDERS: dict[str, Callable[[dict, Path], list[Section]]] = {}

# The paper's Table 1 (IFEval single-instruction format prompts, loose accuracy).
PAPER_FORMAT = pd.DataFrame(
    [("Phi-3-mini", .110, .307, .699, .785), ("Gemma-2-2B-IT", .129, .307, .693, .761),
     ("Mistral-7B-Instruct", .067, .141, .626, .638), ("Gemma-2-9B-IT", .123, .288, .865, .865)],
    columns=["model", "no_instr", "no_instr_steered", "instr", "instr_steered"])


def builder(name: str):
    def register(fn):
        BUILDERS[name] = fn
        return fn
    return register


def md_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    def cell(v):
        return format(v, floatfmt) if isinstance(v, float) else str(v)
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def condition_label(with_instruction: bool, steered: bool) -> str:
    return ("instr" if with_instruction else "no_instr") + ("_steered" if steered else "")


def run_header(state: dict) -> str:
    """Markdown lines naming the run: experiment, model, hashes, commit, timings, configuration."""
    ident, info = state["identity"], state["model_info"]
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in state.get("timings", {}).items())
    return (f"- experiment: **{ident['experiment']}**, model **{info['name']}** "
            f"(weights `{info['weight_hash'][:16]}`, {info['dtype']})\n"
            f"- data hash `{ident['data_hash'][:16]}`, requirements.lock "
            f"`{str(state.get('lock_hash', 'not recorded'))[:16]}`, git commit `{state.get('git_commit')}`, "
            f"created {state.get('created')}\n- timings: {timings or 'n/a'}\n"
            f"- configuration: `{json.dumps(ident['config'])}`")


@builder("format")
def format_sections(state: dict, run: Path) -> list[Section]:
    from workbench import plots

    tables = run / "tables"
    sections = []
    if (tables / "two_by_two_loose.csv").exists():
        tbl = pd.read_csv(tables / "two_by_two_loose.csv")
        ours = {condition_label(r.with_instruction, r.steered): r.accuracy for r in tbl.itertuples()}
        beside = pd.concat([PAPER_FORMAT, pd.DataFrame([{"model": f"{state['model_info']['name']} (this run)", **ours}])])
        fig = plots.two_by_two_bars(tbl.rename(columns={"with_instruction": "instruction_in_prompt"}))
        text = ""
        for metric, what in (("loose", "loose accuracy"), ("good", "followed and not degenerate")):
            if not (tables / f"two_by_two_{metric}.csv").exists():
                continue
            t = pd.read_csv(tables / f"two_by_two_{metric}.csv")
            mc = pd.read_csv(tables / f"mcnemar_{metric}.csv")
            text += (f"**{what}** (95% Wilson intervals):\n\n"
                     + md_table(t[["with_instruction", "steered", "n", "accuracy", "ci_low", "ci_high"]])
                     + "\n\nExact McNemar, steered vs unsteered, paired by prompt:\n\n"
                     + md_table(mc[["with_instruction", "n_pairs", "acc_unsteered", "acc_steered", "b01", "b10", "pvalue"]])
                     + "\n\n")
        text += ("Beside the paper's Table 1 (loose accuracy; the paper's models are 20-50x larger):\n\n"
                 + md_table(beside))
        sections.append(("Test set: the four conditions", text, [fig]))
        per = pd.read_csv(tables / "per_instruction_loose.csv")
        per["condition"] = [condition_label(a, b) for a, b in zip(per.with_instruction, per.steered)]
        wide = per.pivot(index="instruction_id", columns="condition", values="accuracy").reset_index()
        counts = per.groupby("instruction_id")["n"].max().rename("n").reset_index()
        wide = wide.merge(counts, on="instruction_id")
        if "layer" in per:  # the setting each condition's search chose
            for w, name in ((False, "chosen_no_instr"), (True, "chosen_instr")):
                c = per[per.with_instruction == w].drop_duplicates("instruction_id")
                label = [("none" if l < 0 else f"{m} L{l:.0f} x{s:g}")
                         for l, m, s in zip(c["layer"], c["mode"], c["strength"])]
                wide = wide.merge(pd.DataFrame({"instruction_id": c["instruction_id"], name: label}),
                                  on="instruction_id", how="left")
        bars = go.Figure([go.Bar(x=wide["instruction_id"], y=wide[c], name=c)
                          for c in ["no_instr", "no_instr_steered", "instr", "instr_steered"] if c in wide])
        bars.update_layout(barmode="group", title="Loose accuracy per instruction", yaxis_range=[0, 1])
        sections.append(("Per instruction (loose accuracy) and the chosen settings", md_table(wide), [bars]))
    if (tables / "fluency.csv").exists():
        flu = pd.read_csv(tables / "fluency.csv")
        sections.append(("Fluency of the test responses",
                         "Perplexity of each response alone under the unsteered model; degenerate = "
                         "empty or looping (workbench.fluency.is_degenerate); cut_at_limit = share "
                         "stopped by max_new_tokens.\n\n" + md_table(flu), []))
    if (tables / "search_rounds.csv").exists():
        rounds = pd.read_csv(tables / "search_rounds.csv")
        choices = pd.read_csv(tables / "search_choices.csv")
        plan = state["choices"].get("search_plan", {})
        figs = [plots.search_rounds(g, title=f"Search: {iid}")
                for iid, g in rounds.groupby("instruction_id", sort=False)]
        last = rounds[rounds["round"] == rounds["round"].max()]
        final = last.merge(choices[["instruction_id", "with_instruction", "label"]]
                           .rename(columns={"label": "chosen"}), on=["instruction_id", "with_instruction"])
        final = final[(final["label"] == final["chosen"]) | (final["label"] == "none")]
        text = (f"Successive halving over {len(plan.get('candidates', []))} candidates, prompts per "
                f"round {plan.get('prompts')}, steered candidates kept {plan.get('keep')}; selected on "
                f"followed (loose) and not degenerate; steering must beat no steering strictly.\n\n"
                + md_table(final[["instruction_id", "with_instruction", "label", "n", "good", "loose",
                                  "degenerate"]]))
        sections.append(("The search on validation prompts", text, figs))
    return sections


def write_figures(run_dir: str | Path, out_dir: str | Path, formats=("png",)) -> list[Path]:
    """Export every figure of a run's report into `out_dir`, with an index.json tying each file
    to the run it came from (directory, experiment, model, weight and data hashes, commit)."""
    from workbench.plots import export

    run = Path(run_dir)
    state = load_run(run)
    name = state["identity"]["experiment"]
    figures = [fig for _, _, figs in sections(run) for fig in figs]
    out, paths = Path(out_dir), []
    for i, fig in enumerate(figures):
        title = (fig.layout.title.text or f"figure {i}").lower()
        slug = "".join(c if c.isalnum() else "_" for c in title).strip("_")[:60]
        paths += export(fig, f"{name}_{i:02d}_{slug}", out_dir=out, formats=formats)
    index = dict(run_dir=str(run), experiment=name, model=state["model_info"]["name"],
                 weight_hash=state["model_info"]["weight_hash"],
                 data_hash=state["identity"]["data_hash"], git_commit=state.get("git_commit"),
                 files=[p.name for p in paths])
    (out / f"{name}_index.json").write_text(json.dumps(index, indent=1))
    return paths


def load_run(run_dir: str | Path) -> dict:
    """A run directory's run.json: identity (experiment, config, hashes), model, records."""
    run = Path(run_dir)
    if not (run / "run.json").exists():
        raise FileNotFoundError(f"{run} has no run.json: not a workbench run directory")
    return json.loads((run / "run.json").read_text())


def sections(run_dir: str | Path) -> list[Section]:
    """The report of a run as (title, markdown, [figures]) sections, for a notebook to show."""
    import workbench.report_sections  # noqa: F401  (registers the other experiments' sections)

    state = load_run(run_dir)
    name = state["identity"]["experiment"]
    return BUILDERS[name](state, Path(run_dir)) if name in BUILDERS else []


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write report.html and summary.md into the run directory; returns their paths."""
    run = Path(run_dir)
    state = load_run(run)
    name = state["identity"]["experiment"]
    sections_ = sections(run)
    title = f"workbench: {name} on {state['model_info']['name']}"
    md = [f"# {title}", "", run_header(state), ""]
    parts = [f"<h1>{html.escape(title)}</h1>", _md_block(run_header(state))]
    first = True
    for heading, text, figs in sections_:
        md += [f"## {heading}", "", text, ""]
        parts += [f"<h2>{html.escape(heading)}</h2>", _md_block(text)]
        for fig in figs:
            parts.append(fig.to_html(full_html=False, include_plotlyjs=first))
            first = False
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title)
            + "</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
            "</head><body>" + "\n".join(parts) + "</body></html>")
    html_path, md_path = run / "report.html", run / "summary.md"
    html_path.write_text(page, encoding="utf-8")
    md_path.write_text("\n".join(md), encoding="utf-8")
    return html_path, md_path


def _md_block(text: str) -> str:
    """Markdown tables and lists as simple HTML (enough for the summaries written here)."""
    out, rows = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                rows.append(cells)
            continue
        if rows:
            out.append("<table>" + "".join(
                "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c)}</{'th' if i == 0 else 'td'}>"
                                 for c in r) + "</tr>" for i, r in enumerate(rows)) + "</table>")
            rows = []
        if line.strip():
            out.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    return "\n".join(out)
