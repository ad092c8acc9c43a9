"""The report of a run directory: a self-contained HTML page (plotly.js embedded, readable
offline) and a Markdown summary, rebuilt from the files the run wrote.

    workbench report runs/format          # or wb.report.write_report("runs/format")

Each experiment has a section builder in workbench/report_sections.py (one plain registry,
BUILDERS, imported in one direction): (run.json state, run directory) -> list of (title,
markdown, [figures]).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.report_sections import BUILDERS
from workbench.report_tables import Section, condition_label, md_table

# the section type and table helpers are part of this module's face (wb.report.md_table)
__all__ = [
    "Section",
    "condition_label",
    "load_run",
    "md_table",
    "run_header",
    "sections",
    "write_figures",
    "write_report",
]


def run_header(state: dict[str, Any]) -> str:
    """Markdown lines naming the run: experiment, model, hashes, commit, timings, configuration."""
    ident, info = state["identity"], state["model_info"]
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in state.get("timings", {}).items())
    return (
        f"- experiment: **{ident['experiment']}**, model **{info['name']}** "
        f"(weights `{info['weight_hash'][:16]}`, {info['dtype']})\n"
        f"- data hash `{ident['data_hash'][:16]}`, requirements.lock "
        f"`{str(state.get('lock_hash', 'not recorded'))[:16]}`, git commit `{state.get('git_commit')}`, "
        f"created {state.get('created')}{_resumed_elsewhere(state)}\n- timings: {timings or 'n/a'}\n"
        f"- configuration: `{json.dumps(ident['config'])}`"
    )


def _resumed_elsewhere(state: dict[str, Any]) -> str:
    """ ", resumed at commit X (time)" for each resume from another commit than the run's own
    (older runs recorded only the time of a resume)."""
    others = [
        r for r in state.get("resumed", []) if isinstance(r, dict) and r.get("git_commit") != state.get("git_commit")
    ]
    return "".join(f", resumed at commit `{r['git_commit']}` ({r['at']})" for r in others)


def write_figures(run_dir: str | Path, out_dir: str | Path, formats: Sequence[str] = ("png",)) -> list[Path]:
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
        paths += export(
            fig, f"{name}_{i:02d}_{slug}", out_dir=out, formats=formats, include_plotlyjs="directory"
        )  # HTML pages share one plotly.min.js
    paths = list(dict.fromkeys(paths))
    index = dict(
        run_dir=str(run),
        experiment=name,
        model=state["model_info"]["name"],
        weight_hash=state["model_info"]["weight_hash"],
        data_hash=state["identity"]["data_hash"],
        git_commit=state.get("git_commit"),
        files=[p.name for p in paths],
    )
    (out / f"{name}_index.json").write_text(json.dumps(index, indent=1))
    return paths


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's run.json: identity (experiment, config, hashes), model, records."""
    run = Path(run_dir)
    if not (run / "run.json").exists():
        raise FileNotFoundError(f"{run} has no run.json: not a workbench run directory")
    state: dict[str, Any] = json.loads((run / "run.json").read_text())
    return state


def sections(run_dir: str | Path) -> list[Section]:
    """The report of a run as (title, markdown, [figures]) sections, for a notebook to show."""
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
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        + html.escape(title)
        + "</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
        "</head><body>" + "\n".join(parts) + "</body></html>"
    )
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
            out.append(
                "<table>"
                + "".join(
                    "<tr>"
                    + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c)}</{'th' if i == 0 else 'td'}>" for c in r)
                    + "</tr>"
                    for i, r in enumerate(rows)
                )
                + "</table>"
            )
            rows = []
        if line.strip():
            out.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    return "\n".join(out)
