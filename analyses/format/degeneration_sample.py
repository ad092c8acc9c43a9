"""The degeneration rule before and after the repeated-line and run criteria, on real outputs.
Writes DEGENERATION.md beside this file: flagged counts per condition, every disagreement, and
a seeded sample of flagged and passed responses per condition, for a reader to judge the rule.

    .venv/bin/python analyses/format/degeneration_sample.py            # the format run
    .venv/bin/python analyses/format/degeneration_sample.py RUN_DIR    # another run directory

Perplexity is used where the run recorded it (the test phase: each response alone under the
unsteered model), as the experiment's own `add_fluency` does; validation has none.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pandas as pd

from workbench.fluency import (
    compression_ratio,
    degeneration_reason,
    distinct_n,
    longest_run,
    repeated_unit,
    without_json,
    words,
)
from workbench.report import md_table

HERE = Path(__file__).resolve().parent
ANALYSES = HERE.parent
SEED = 0
PER_CELL = 4  # flagged and passed responses shown per condition
CUT = 300  # characters of each response shown
CONDITIONS = [(False, False), (False, True), (True, False), (True, True)]


def old_rule(text: str, ppl: float) -> bool:
    """`is_degenerate` before the run and repeated-line criteria, kept here to compare."""
    if not text.strip():
        return True
    if ppl < 2.5:  # NaN compares False
        return True
    if len(words(text)) >= 20 and distinct_n(text, 2) < 0.5:
        return True
    return len(text.encode("utf-8")) >= 200 and compression_ratio(text) < 0.25


def label(with_instruction: bool, steered: bool) -> str:
    return ("instruction" if with_instruction else "no instruction") + (" + steering" if steered else "")


def load(run: Path) -> pd.DataFrame:
    """Validation and test outputs of a run, one row each, judged by both rules."""
    parts = [
        pd.read_csv(run / name).assign(phase=phase)
        for name, phase in (("validation_scores.csv", "validation"), ("scores.csv", "test"))
        if (run / name).exists()
    ]
    df = pd.concat(parts, ignore_index=True)
    df["phase"] = pd.Categorical(df["phase"], categories=["validation", "test"])
    df["response"] = df["response"].fillna("")
    ppl = df["ppl"].astype(float) if "ppl" in df else pd.Series(math.nan, index=df.index)
    df["old"] = [old_rule(t, p) for t, p in zip(df["response"], ppl)]
    df["reason"] = [degeneration_reason(t, None if math.isnan(p) else p) for t, p in zip(df["response"], ppl)]
    df["new"] = df["reason"] != ""
    df["condition"] = pd.Categorical(
        [label(w, s) for w, s in zip(df["with_instruction"], df["steered"])],
        categories=[label(w, s) for w, s in CONDITIONS],
    )
    return df


def counts(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Flagged by the old rule, the new rule, and each alone."""
    return (
        df.groupby(by, sort=True, observed=True)
        .apply(
            lambda g: pd.Series(
                dict(
                    n=len(g),
                    old=int(g["old"].sum()),
                    new=int(g["new"].sum()),
                    new_only=int((g["new"] & ~g["old"]).sum()),
                    old_only=int((g["old"] & ~g["new"]).sum()),
                )
            ),
            include_groups=False,
        )
        .reset_index()
    )


def reasons(df: pd.DataFrame) -> pd.DataFrame:
    """New-rule verdicts by reason and condition (the first criterion that holds)."""
    flagged = df[df["new"]]
    return pd.crosstab(flagged["reason"], flagged["condition"]).reset_index()


def detail(row) -> str:
    """The numbers behind a verdict, one line."""
    unit, n = repeated_unit(row.response)
    string, covered = longest_run(row.response)
    ppl = getattr(row, "ppl", math.nan)
    parts = [
        f"distinct-2 {distinct_n(row.response, 2):.2f}",
        f"compression {compression_ratio(row.response):.2f}",
        f"most repeated line x{n}" + (f" ({unit[:40]!r})" if n > 1 else ""),
        f"longest run {covered} chars" + (f" of {string[:12]!r}" if covered else ""),
    ]
    if isinstance(ppl, float) and not math.isnan(ppl):
        parts.append(f"ppl {ppl:.2f}")
    return "; ".join(parts)


def evidence(text: str, reason: str) -> str:
    """What made the new rule flag `text`, short enough for a table cell."""
    if reason == "run":
        string, covered = longest_run(text)
        return one_line(f"x{covered // len(string)} {string!r}", 40)
    if reason == "repeated_line":
        unit, n = repeated_unit(text)
        return one_line(f"x{n} {unit!r}", 40)
    if reason == "" and without_json(text) != text:
        return "a JSON value that parses, left out of the statistics"
    return f"distinct-2 {distinct_n(text, 2):.2f}, compression {compression_ratio(text):.2f}"


def where(row) -> str:
    layer = "no steering" if row.layer == -1 else f"layer {int(row.layer)}"
    return f"{row.phase} `{row.key}` {row.instruction_id}, {layer}"


def block(text: str) -> str:
    """A response cut to CUT characters in a fence no backtick run inside can close."""
    shown = text[:CUT] + ("…" if len(text) > CUT else "")
    longest = max((len(m) for m in re.findall(r"`+", shown)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{shown}\n{fence}"


def one_line(text: str, width: int = 110) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return "`" + (flat[:width] + "…" if len(flat) > width else flat).replace("`", "'") + "`"


def disagreements(df: pd.DataFrame) -> str:
    """Every response the rules judge differently, identical responses listed once."""
    diff = df[df["old"] != df["new"]]
    if diff.empty:
        return "None: the rules agree on every response.\n"
    groups = (
        diff.groupby("response", sort=False)
        .agg(
            rows=("response", "size"),
            reason=("reason", "first"),
            old=("old", "first"),
            conditions=("condition", lambda s: ", ".join(sorted(set(map(str, s))))),
            phases=("phase", lambda s: ", ".join(sorted(set(s)))),
        )
        .reset_index()
        .sort_values(["reason", "rows"], ascending=[True, False])
    )
    table = pd.DataFrame(
        {
            "new verdict": [r if r else "passes" for r in groups["reason"]],
            "old": ["flagged" if o else "passed" for o in groups["old"]],
            "evidence": [evidence(t, r) for t, r in zip(groups["response"], groups["reason"])],
            "rows": groups["rows"],
            "phase": groups["phases"],
            "conditions": groups["conditions"],
            "response (start)": [one_line(t, 90) for t in groups["response"]],
        }
    )
    return f"{len(diff)} rows, {len(groups)} distinct responses.\n\n" + md_table(table) + "\n"


def samples(df: pd.DataFrame) -> str:
    """Per condition, PER_CELL flagged and PER_CELL passed distinct responses, seeded."""
    out = []
    for with_instruction, steered in CONDITIONS:
        g = df[(df["with_instruction"] == with_instruction) & (df["steered"] == steered)]
        if g.empty:
            continue
        g = g.drop_duplicates("response")
        out.append(f"### {g['condition'].iloc[0]} ({len(g)} distinct responses)\n")
        for flagged in (True, False):
            pool = g[g["new"] == flagged]
            pick = pool.sample(min(PER_CELL, len(pool)), random_state=SEED)
            out.append(f"**{'Flagged' if flagged else 'Passed'}** ({len(pool)} of {len(g)}; {len(pick)} shown)\n")
            for row in pick.itertuples():
                verdict = f"degenerate: **{row.reason}**" if flagged else "not degenerate"
                old = "" if row.old == row.new else " (the old rule said the opposite)"
                out.append(f"- {where(row)}: {verdict}{old}. {detail(row)}\n\n{block(row.response)}\n")
    return "\n".join(out)


def borderline(df: pd.DataFrame) -> str:
    """Kinds of response where a reader may disagree with the new rule, counted in this run."""
    placeholders = df["response"].str.contains(r"(?i)this is (?:bullet )?point \d")
    only_ppl = df["reason"] == "perplexity"
    near = df["response"].map(lambda t: len(words(t)) >= 20 and 0.5 <= distinct_n(t, 2) < 0.55)
    said_twice = (~df["new"]) & df["response"].map(lambda t: repeated_unit(t)[1] == 2)

    def rows(mask: pd.Series) -> str:
        return f"{int(mask.sum())} row{'s' if mask.sum() != 1 else ''}"

    lines = [
        (
            f'- **Placeholder lists** ("* This is point 1", "* This is point 2", …: the format '
            f"example of the IFEval instruction, copied): {rows(placeholders)}, "
            f"{int((placeholders & df['new']).sum())} flagged. Numbers are masked when lines are "
            f"compared, so three such items in a row are one line written three times. They count "
            f"up and say nothing, but IFEval scores them as following the instruction; two items "
            f"pass."
        ),
        (
            f"- **Flagged by perplexity alone** (test phase only, SmolLM2 scoring its own response, "
            f"floor 2.5): {rows(only_ppl)}, examples below. The floor is the paper's GPT-2 number "
            f"and is kept; a model scoring its own greedy output puts fluent text below it too "
            f"(code answers in the length and composition runs). Validation records no "
            f"perplexity, so the layer search never uses this criterion."
        ),
        (
            f"- **Distinct-2 from 0.50 to 0.55** on 20+ words, not flagged: {rows(near)}. "
            f"Repetitive low-quality prose that partly recovers, and some loops that no criterion "
            f"catches. Distinct-2 falls with length, so a higher threshold would start flagging "
            f"long fluent answers."
        ),
        (
            f"- **A line or sentence written exactly twice**, nothing flagged: {rows(said_twice)}. "
            f'Mixed: a poem\'s refrain, "I am ready to assist you." at both ends, but also a '
            f"paragraph that starts again and is cut by the 96-token limit. Flagging two copies "
            f"would take the refrains with it."
        ),
        (
            '- **Counting inside a line** ("[Math] 10, 2, 3, 4, …, 19", "2019-01-10 2019-01-11 …") '
            "passes: `run` compares characters exactly. Counting over lines is flagged, because "
            'lines are compared with numbers masked ("SECTION 1", "SECTION 2", …).'
        ),
    ]
    examples = []
    for title, mask in (("perplexity alone", only_ppl), ("placeholder list", placeholders & df["new"])):
        rows = df[mask].drop_duplicates("response")
        for row in rows.sample(min(3, len(rows)), random_state=SEED).itertuples():
            examples.append(f"- {title}: {where(row)}. {detail(row)}\n\n{block(row.response)}\n")
    return "\n".join(lines) + ("\n\nExamples:\n\n" + "\n".join(examples) if examples else "")


def known_errors(df: pd.DataFrame) -> str:
    """The two errors the issue reported, counted in this run."""
    titled = df["response"].str.match(r"\s*<<[^<>\n]+>>")
    title_fixed = titled & df["old"] & ~df["new"]
    brackets = df["response"].str.contains("<" * 20, regex=False)
    return "\n".join(
        [
            (
                f"- A title followed by a paragraph judged degenerate: {int(titled.sum())} rows start "
                f"with a `<<title>>`; the old rule flagged {int((titled & df['old']).sum())}, the new "
                f"rule passes {int(title_fixed.sum())} of those. Read one by one, the old rule's flags "
                f"on titled responses in this run are all loops after the title (the title again, a "
                f"sentence again, JSON nesting), so the error does not show here; `<<` and `>>` are "
                f"one token each for `words()` and do not lower the distinct-2 of a title and a "
                f"paragraph. The case is pinned by a test (tests/test_fluency.py)."
            ),
            (
                f"- `<<<<<<…` judged not degenerate: {int(brackets.sum())} rows hold 20 or more `<` in a "
                f"row; the old rule flagged {int((brackets & df['old']).sum())} of them, the new rule "
                f"{int((brackets & df['new']).sum())}. `words()` reads a run of punctuation as one word, "
                f"and under 200 bytes compression is not applied; the `run` criterion catches it."
            ),
        ]
    )


def other_runs(exclude: Path) -> str:
    """Old vs new flagged counts in the other committed runs, by phase."""
    rows = []
    for run in sorted(ANALYSES.glob("*/run*")):
        if run.resolve() == exclude.resolve() or not (run / "scores.csv").exists():
            continue
        df = load(run)
        for phase, g in df.groupby("phase", observed=True):
            rows.append(
                dict(
                    run=str(run.relative_to(ANALYSES)),
                    phase=phase,
                    n=len(g),
                    old=int(g["old"].sum()),
                    new=int(g["new"].sum()),
                    new_only=int((g["new"] & ~g["old"]).sum()),
                    old_only=int((g["old"] & ~g["new"]).sum()),
                )
            )
    return md_table(pd.DataFrame(rows)) if rows else "No other runs."


RULE = """\
**Old rule** (`is_degenerate` before this change): empty; or perplexity < 2.5; or distinct-2
< 0.5 on 20+ words; or zlib compression ratio < 0.25 on 200+ bytes.

**New rule** (`workbench.fluency.degeneration_reason`): the old criteria, plus two, and the
first that holds is recorded as the reason:
- `run`: one string of up to 32 characters written 3+ times back to back over 20+ characters
  ("<<<<<<…", "🎉🎉🎉…", "NANANA…", a word or a short line over and over). The old rule missed
  these when the text was short (one "word" for `words()`, under 200 bytes) or when the rest of
  the response was fluent.
- `repeated_line`: a line or sentence (compared by its words, ignoring case, markup, list
  markers, with numbers masked) written 3+ times: in a row for any line (a title written three
  times, "SECTION 1 / SECTION 2 / …" with nothing in them), anywhere for one of 4+ words.
Distinct-2 and compression now leave out a JSON value that parses: records sharing keys
scored like a loop. Order: empty, run, repeated_line, distinct_2, compression, perplexity.
"""


def main(run: Path) -> str:
    df = load(run)
    stored = df["degenerate"].astype(bool) if "degenerate" in df else None
    agree = (
        ""
        if stored is None
        else (
            f"The old rule recomputed here agrees with the `degenerate` column the run recorded on "
            f"{int((stored == df['old']).sum())} of {len(df)} rows.\n"
        )
    )
    by_condition = counts(df, ["phase", "condition"])
    total = counts(df.assign(all="all"), ["all"]).drop(columns="all")
    return "\n".join(
        [
            f"# Degeneration rule on real outputs: `{run.relative_to(ANALYSES.parent)}`\n",
            (
                "Generated by `analyses/format/degeneration_sample.py` (seed "
                f"{SEED}); do not edit by hand. Responses are cut at 96 tokens by the run itself.\n"
            ),
            RULE,
            "## Flagged per condition\n",
            agree,
            md_table(by_condition) + "\n",
            "All rows: " + ", ".join(f"{c} {total[c].iloc[0]}" for c in total.columns) + ".\n",
            (
                "In the test phase the no-instruction arm chose no steering for every instruction, so "
                "its steered and unsteered rows are the same generations.\n"
            ),
            "New-rule reasons (the first criterion that holds):\n",
            md_table(reasons(df)) + "\n",
            "## The errors the issue reported\n",
            known_errors(df) + "\n",
            "## Disagreements\n",
            disagreements(df),
            "## Borderline cases\n",
            borderline(df) + "\n",
            "## Sample per condition\n",
            (
                f"{PER_CELL} flagged and {PER_CELL} passed distinct responses per condition (validation "
                f"and test together), drawn with seed {SEED}; each cut to {CUT} characters.\n"
            ),
            samples(df),
            "## Other committed runs\n",
            other_runs(run) + "\n",
        ]
    )


if __name__ == "__main__":
    run = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "run"
    out = HERE / "DEGENERATION.md"
    out.write_text(main(run.resolve()))
    print(f"wrote {out}")
