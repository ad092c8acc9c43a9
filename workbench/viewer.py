"""A self-contained HTML page for reading a run's generations side by side.

    workbench view runs/format                 # writes runs/format/viewer.html and prints its path

    from workbench.viewer import viewer_records, write_viewer
    write_viewer("runs/format")                # the same from Python
    viewer_records("runs/format")              # the joined table behind it (one row per generation)

Each steered answer is shown beside the prompt and the unsteered answer to the same prompt, and,
when the run has them, the answers with the instruction written in the prompt (unsteered, and
steered with the same setting). Verdicts (IFEval strict / loose and the run's other checks) and
degeneration flags come from scores.csv and validation_scores.csv, joined by job id.

The page is plain HTML with a little vanilla JavaScript; the data is embedded as JSON, nothing
is fetched. Filters (phase, instruction, condition, layer, weight, mode or arm, verdict,
degenerate, text) live in the URL hash, so a link opens the same view, e.g.
`viewer.html#instruction=detectable_format:title&layer=26`.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from workbench._viewer_page import PAGE

SCORE_FILES = ("validation_scores.csv", "scores.csv")
VERDICTS = ("strict", "loose", "word_match", "format_ok", "length_ok", "at_most_n", "loose_not_degenerate")
METRICS = ("ppl", "distinct_2", "compression_ratio")
PAGE_SIZE = 100  # cards drawn at a time; "show more" draws the next ones


def read_generations(run_dir: str | Path) -> tuple[list[dict[str, Any]], int]:
    """The records of generations.jsonl and the count of lines that could not be read (skipped
    here; the run itself sets them aside when it resumes). Read-only: nothing is moved."""
    path = Path(run_dir) / "generations.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} has no generations.jsonl: not a run directory, or nothing "
            f"generated yet. Fix: pass a run directory (e.g. analyses/format/run)"
        )
    records, bad = [], 0
    with path.open("rb") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(record, dict) and "job" in record and "response" in record:
                records.append(record)
            elif line.strip():
                bad += 1
    return records, bad


def viewer_records(run_dir: str | Path) -> pd.DataFrame:
    """One row per generation: its fields, then the verdict and fluency columns of the score
    files (joined by `job`; missing where the run has not scored it), with `instruction`,
    `layer_label` and `weight` normalised across experiments (instruction_id or
    format_instruction; strength or weight)."""
    records, _ = read_generations(run_dir)
    gens = pd.DataFrame(records).drop_duplicates("job", keep="last")
    keep = ["job", *VERDICTS, "degenerate", "degenerate_reason", *METRICS]
    scored = [pd.read_csv(Path(run_dir) / name) for name in SCORE_FILES if (Path(run_dir) / name).is_file()]
    if scored:
        scores = pd.concat(scored, ignore_index=True).drop_duplicates("job", keep="last")
        scores = scores[[c for c in keep if c in scores.columns]]
        gens = gens.drop(columns=[c for c in scores.columns if c != "job" and c in gens.columns])
        gens = gens.merge(scores, on="job", how="left")
    gens["instruction"] = _first(gens, ("instruction_id", "format_instruction"), "")
    gens["weight"] = _first(gens, ("strength", "weight"), math.nan)
    layer = _first(gens, ("layer", "format_layer"), math.nan)
    steered = gens["steered"].astype(bool) if "steered" in gens else layer.ge(0)
    gens["steered"] = steered
    gens["layer"] = layer.where(steered & layer.ge(0))
    return gens.reset_index(drop=True)


def _first(df: pd.DataFrame, names: Sequence[str], default: str | float) -> pd.Series:
    out = pd.Series(default, index=df.index, dtype=object if isinstance(default, str) else float)
    for name in reversed(names):
        if name in df.columns:
            out = df[name].where(df[name].notna(), out)
    return out


def _column(df: pd.DataFrame, name: str, default: str) -> list[str]:
    """Column `name` as strings ("" for missing values), or `default` throughout."""
    return df[name].fillna("").astype(str).tolist() if name in df.columns else [default] * len(df)


def _payload(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Compact rows for the page, each pointing at its references by index."""
    key = df["row_id" if "row_id" in df.columns else "key"].astype(str).tolist()
    phase, group, label = _column(df, "phase", ""), _column(df, "arm", ""), _column(df, "steering", "")
    cond: list[bool] = (
        df["with_instruction"].fillna(False).astype(bool).tolist() if "with_instruction" in df else [False] * len(df)
    )
    records = df.to_dict("records")
    unsteered: dict[tuple[str, str, bool], int] = {}
    steered_at: dict[tuple[str, str, bool, str], int] = {}
    for i, r in enumerate(records):
        if not r["steered"]:
            unsteered.setdefault((phase[i], key[i], cond[i]), i)
        else:
            steered_at.setdefault((phase[i], key[i], cond[i], label[i]), i)
    rows = []
    for i, r in enumerate(records):
        p, k, c = phase[i], key[i], cond[i]
        verdicts = {v: bool(r[v]) for v in VERDICTS if v in r and _known(r[v])}
        metrics = {m: round(float(r[m]), 3) for m in METRICS if m in r and _known(r[m])}
        degenerate = r.get("degenerate")
        rows.append(
            dict(
                job=str(r["job"]),
                phase=p,
                key=k,
                inst=str(r["instruction"]),
                cond=c,
                layer=None if pd.isna(r["layer"]) else int(r["layer"]),
                weight=None if pd.isna(r["weight"]) else float(r["weight"]),
                group=str(r.get("mode", "") or group[i]) if "mode" in df.columns else group[i],
                steered=bool(r["steered"]),
                label=label[i],
                prompt=str(r["prompt"]),
                response=str(r["response"]),
                tokens=_int(r.get("n_tokens")),
                finish=str(r.get("finish_reason", "") or ""),
                verdicts=verdicts,
                metrics=metrics,
                degenerate=None if not _known(degenerate) else bool(degenerate),
                reason=str(r.get("degenerate_reason", "") or "") if _known(r.get("degenerate_reason")) else "",
                base=unsteered.get((p, k, c)),
                base_with=None if c else unsteered.get((p, k, True)),
                steered_with=None if c or not r["steered"] else steered_at.get((p, k, True, label[i])),
            )
        )
    return rows


def _known(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _int(value: Any) -> int | None:
    return int(value) if _known(value) else None


def write_viewer(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the viewer page (default `<run_dir>/viewer.html`) and return its path."""
    run = Path(run_dir)
    df = viewer_records(run)
    _, bad = read_generations(run)
    info = {}
    if (run / "run.json").is_file():
        try:
            state = json.loads((run / "run.json").read_text())
            info = dict(experiment=state["identity"]["experiment"], model=state["model_info"]["name"])
        except (ValueError, KeyError, TypeError):
            info = {}
    meta = dict(run=str(run), skipped_lines=bad, n=len(df), page=PAGE_SIZE, **info)
    data = json.dumps(dict(meta=meta, rows=_payload(df)), ensure_ascii=False, allow_nan=False)
    data = data.replace("</", "<\\/")  # a response containing "</script>" must not end the block
    title = f"Generations: {info.get('experiment', run.name)} ({info.get('model', '?')})"
    page = PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", data)
    path = Path(out) if out is not None else run / "viewer.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
