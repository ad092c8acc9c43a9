"""What longer answers cost and buy: the unsteered model on validation prompts (never the test
set), generated once up to 256 new tokens; the greedy answer cut at 96, 128 or 192 tokens is
exactly what a run with that limit would have produced, so one generation scores every limit.

    .venv/bin/python analyses/format/length_budget.py [--per-instruction 6]

Writes analyses/format/length_budget.csv and prints the table (accuracy, share cut at the limit,
mean tokens generated: the cost, since finished rows leave the batch).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

import workbench as wb
from workbench.data import FORMAT_INSTRUCTIONS
from workbench.experiments.rows import validation_rows
from workbench.fluency import fluency_table
from workbench.scoring import score_ifeval

LIMITS = (96, 128, 192, 256)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-instruction", type=int, default=6)
    args = ap.parse_args()
    model = wb.load_model("smollm2-135m-instruct")
    test = wb.format_test_rows()
    split = wb.split_queries(wb.base_queries(), exclude=test, seed=0, validation=72)
    languages = sorted(
        {r.kwargs[0]["language"] for r in test if r.instruction_id_list[0] == "language:response_language"}
    )
    rows = [
        r
        for iid in FORMAT_INSTRUCTIONS
        for r in validation_rows(list(split.validation), iid, languages, args.per_instruction, 0)
    ]
    lines = []
    for with_instruction in (False, True):
        prompts = [r.prompt if with_instruction else r.prompt_without_instruction for r in rows]
        start = time.perf_counter()
        table = wb.generate_table(model, prompts, max_new_tokens=max(LIMITS), batch_size=64)
        seconds = time.perf_counter() - start
        for limit in LIMITS:
            ids = [list(t)[:limit] for t in table["token_ids"]]
            texts = [model.tokenizer.decode(t, skip_special_tokens=True) for t in ids]
            cut = [len(t) >= limit for t in ids]
            scores = score_ifeval(rows, texts).groupby("prompt_index")["loose"].all()
            degenerate = fluency_table(texts, min_ppl=0.0)["degenerate"]
            lines.append(
                dict(
                    with_instruction=with_instruction,
                    limit=limit,
                    n=len(rows),
                    loose=float(scores.mean()),
                    good=float((scores.to_numpy() & ~degenerate.to_numpy()).mean()),
                    cut_at_limit=float(pd.Series(cut).mean()),
                    mean_tokens=float(pd.Series([len(t) for t in ids]).mean()),
                    wall_s_at_256=round(seconds, 1),
                )
            )
        per = pd.DataFrame(dict(iid=[r.instruction_id_list[0] for r in rows], n=[len(t) for t in table["token_ids"]]))
        print("with" if with_instruction else "without", "instruction: mean tokens per instruction at 256:")
        print(per.groupby("iid")["n"].mean().round(0).to_string())
    out = pd.DataFrame(lines)
    out.to_csv(Path(__file__).with_name("length_budget.csv"), index=False)
    print(out.to_string(index=False))


if __name__ == "__main__":
    main()
