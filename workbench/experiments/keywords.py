"""The paper's word experiment (Stolfo et al., section 5.2): include or exclude a word, as one call.

    from workbench.experiments.keywords import KeywordsConfig, run_keywords
    run = run_keywords(KeywordsConfig(), out="runs/keywords")        # or: workbench reproduce keywords

1. Vectors per word: the inclusion vector from pairs (base query + "include the word X") vs
   (base query), n_pairs base queries per word (the paper: 20); the exclusion vector likewise from
   "do not use the word X". Training queries exclude every evaluation and validation query.
2. Three arms, all `add` at one layer:
   - include: + the inclusion vector (keywords:existence prompts);
   - exclude_subtract: - the inclusion vector, the paper's exclusion (keywords:forbidden_words);
   - exclude_vector: + the exclusion vector, which the paper found does not work (the
     instruction to avoid a word mentions it), kept so that can be seen.
   A prompt with several words gets one spec per word at weight c / n_words (the paper's split).
3. Search on the packaged validation files (inclusion_validation.jsonl,
   exclusion_validation.jsonl), separately per arm and with / without the instruction: first the
   layer at `search_weight` (n_layers//5 .. last, step 2; the best steered layer, degenerate
   layers dropped), then the weight at that layer (0 = no steering may win).
4. Test: IFEval's single-instruction keyword prompts, each arm at its layer over the whole weight
   grid (accuracy and fluency vs weight), the validation-chosen weight as the headline. Scored
   by the IFEval verifier (loose; note keywords:existence matches substrings) and by a
   case-insensitive word-boundary match of every word (word_match).

Weights are percents of the layer's mean residual norm by default (see workbench.experiments.length).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

import workbench as wb
from workbench.data import IFEvalRow, data_path, rows_hash
from workbench.executor import Executor
from workbench.experiments.checks import check_out, check_prompts_fit, row_prompts
from workbench.experiments.grid import (
    NONE,
    Candidates,
    Choices,
    Settings,
    accuracy_table,
    grid_jobs,
    raw_weight,
    residual_norms,
    run_grid,
    save_scores,
    search,
    search_layers,
)
from workbench.experiments.jobs import vectors_for_all
from workbench.experiments.rows import short_base_queries, short_rows
from workbench.experiments.rundir import RunDir
from workbench.models import load_args
from workbench.pairs import PromptPair
from workbench.types import Model

INCLUDE, EXCLUDE = "keywords:existence", "keywords:forbidden_words"
ARMS = {  # arm: (which rows, which vector, sign of the weight)
    "include": (INCLUDE, "include", 1.0),
    "exclude_subtract": (EXCLUDE, "include", -1.0),
    "exclude_vector": (EXCLUDE, "exclude", 1.0),
}
PHRASINGS = {
    "include": [
        'Include the word "{w}" in your answer.',
        "Your response must contain the word {w}.",
        'Make sure to use the word "{w}".',
        'Use the word "{w}" somewhere in your reply.',
        'The word "{w}" has to appear in the output.',
    ],
    "exclude": [
        'Do not use the word "{w}" in your answer.',
        "Your response must not contain the word {w}.",
        'Avoid the word "{w}" entirely.',
        'Never say "{w}".',
        'The word "{w}" must not appear in the output.',
    ],
}


@dataclass(frozen=True)
class KeywordsConfig(Settings):
    model: str = "smollm2-135m-instruct"
    data: str | None = None  # test file (IFEval JSONL); None: IFEval's single-instruction keyword prompts
    without_data: str | None = None  # requests without instructions, joined by key
    limit: int | None = None  # first N test prompts of each kind (inclusion, exclusion)
    arms: tuple[str, ...] = tuple(ARMS)
    n_pairs: int = 20  # base queries per word vector (the paper: 20)
    n_validation: int = 10  # validation prompts per file
    layer_step: int = 2
    layers: tuple[int, ...] | None = None  # candidate layers; None: n_layers//5 .. last, step
    search_weight: float = 40  # the weight of the layer search (the paper's inclusion c)
    weights: tuple[float, ...] = (0, 10, 20, 40, 80)  # the weight grid; 0 = no steering
    weight_unit: str = "norm_percent"  # or "raw"
    # quick(): two short prompts per kind, few pairs, few layers, one weight, short answers
    QUICK: ClassVar[dict[str, object]] = dict(
        limit=2, n_pairs=6, n_validation=2, layer_step=8, weights=(0, 40), max_new_tokens=32, max_query_chars=300
    )


def words(row: IFEvalRow) -> list[str]:
    kw = row.kwargs[0]
    return list(kw.get("keywords") or kw.get("forbidden_words") or [])


def word_match(row: IFEvalRow, response: str) -> bool:
    """Every word present (inclusion) or none present (exclusion), as whole words, any case."""
    found = [re.search(rf"\b{re.escape(w)}\b", response, flags=re.IGNORECASE) is not None for w in words(row)]
    return all(found) if row.instruction_id_list[0] == INCLUDE else not any(found)


def word_pairs(queries: Sequence[str], word: str, kind: str, *, n: int, seed: int) -> list[PromptPair]:
    """(query + an instruction to include / avoid `word`) vs (query)."""
    rng = random.Random(f"{seed}/{kind}/{word}")
    iid, kwarg = (INCLUDE, "keywords") if kind == "include" else (EXCLUDE, "forbidden_words")
    return [
        PromptPair(f"{kind}/{word}/{i}", f"{q} {rng.choice(PHRASINGS[kind]).format(w=word)}", q, iid, {kwarg: [word]})
        for i, q in enumerate(rng.sample(list(queries), min(n, len(queries))))
    ]


def _slug(word: str) -> str:
    return re.sub(r"[^\w-]", "_", word.lower())


def _test_rows(cfg: KeywordsConfig) -> list[IFEvalRow]:
    rows = short_rows(
        wb.format_test_rows(cfg.data, cfg.without_data, instructions=(INCLUDE, EXCLUDE)), cfg.max_query_chars
    )
    return [r for iid in (INCLUDE, EXCLUDE) for r in [r for r in rows if r.instruction_id_list[0] == iid][: cfg.limit]]


def _validation_rows(n: int, seed: int) -> list[IFEvalRow]:
    out = []
    for name in ("inclusion_validation.jsonl", "exclusion_validation.jsonl"):
        rows = wb.load_ifeval(data_path(name))
        out += [
            replace(
                r, key=f"val/{r.instruction_id_list[0]}/{r.key}", row_id=f"val/{r.instruction_id_list[0]}/{r.row_id}"
            )
            for r in random.Random(seed).sample(rows, min(n, len(rows)))
        ]
    return out


def run_keywords(
    cfg: KeywordsConfig,
    out: str | Path,
    *,
    model: Model | None = None,
    executor: Executor | None = None,
    show_progress: bool | None = None,
) -> RunDir:
    """Run (or resume) the keyword experiment into `out`; returns the run directory."""
    unknown = set(cfg.arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown keyword arms {sorted(unknown)}: use {list(ARMS)}")
    model = model or wb.load_model(cfg.model, **load_args(cfg))
    test, val = _test_rows(cfg), _validation_rows(cfg.n_validation, cfg.seed)
    if not test:
        raise ValueError("no single-instruction keyword prompts in the test data")
    check_out(out)
    check_prompts_fit(model, row_prompts(test + val), max_new_tokens=cfg.max_new_tokens)
    run = RunDir.open(out, "keywords", cfg, model=model, data_hash=rows_hash(test + val))
    run.record("format", wb.default_format(model).to_dict())
    layers = search_layers(model.cfg.n_layers, cfg.layer_step, cfg.layers)
    run.record("candidate_layers", layers)
    split = wb.split_queries(short_base_queries(cfg.max_query_chars), exclude=test + val, seed=cfg.seed, validation=0)

    # 1. a vector per word and kind, for the words of the arms' rows
    need = sorted(
        {
            (ARMS[a][1], w)
            for a in cfg.arms
            for r in test + val
            if r.instruction_id_list[0] == ARMS[a][0]
            for w in words(r)
        }
    )
    wanted = {
        (kind, w): (f"{kind}/{_slug(w)}", word_pairs(split.train, w, kind, n=cfg.n_pairs, seed=cfg.seed))
        for kind, w in need
    }
    vectors = vectors_for_all(run, model, wanted, batch_size=cfg.batch_size, executor=executor)
    norms = residual_norms(run, model, split.train[:16], layers, batch_size=cfg.batch_size)

    def specs(arm: str, row: IFEvalRow, layer: int, c: float) -> list[wb.Steering]:
        _, kind, sign = ARMS[arm]
        w = sign * raw_weight(c, layer, norms, cfg.weight_unit) / len(words(row))
        return [wb.Steering(vectors[(kind, word)], layer, "add", w) for word in words(row)]

    def arms_of(row: IFEvalRow) -> list[str]:
        return [a for a in cfg.arms if ARMS[a][0] == row.instruction_id_list[0]]

    def grid(at_layer: Choices | None = None, weights: Sequence[float] = ()) -> Candidates:
        """Candidates: no steering, then the layers (at the search weight), or the weights at
        the layer chosen per (arm, condition)."""

        def candidates(row: IFEvalRow, with_instruction: bool) -> list[tuple[str, int, float]]:
            out = [(a, NONE, 0.0) for a in arms_of(row)]
            for a in arms_of(row):
                if at_layer is None:
                    out += [(a, layer, cfg.search_weight) for layer in layers]
                else:
                    layer = at_layer[(a, with_instruction)]
                    out += [(a, layer, c) for c in weights if c]
            return out

        return candidates

    group = ["arm", "with_instruction"]

    def tags(row: IFEvalRow) -> dict[str, Any]:
        return dict(words=words(row))

    # 2. the layer, then the weight, on validation prompts (one phase: shared generations reused)
    val_jobs = grid_jobs(val, "validation", grid(), specs, tags=tags)
    scored = run_grid(
        run, model, val_jobs, cfg, phase="validation", perplexity=False, executor=executor, show_progress=show_progress
    )
    layer_of = search(run, scored, "layer_search", group=group, steered_only=True)
    weight_jobs = grid_jobs(val, "validation", grid(layer_of, cfg.weights), specs, tags=tags)
    wscored = run_grid(
        run,
        model,
        weight_jobs,
        cfg,
        phase="validation",
        perplexity=False,
        executor=executor,
        show_progress=show_progress,
    )
    weight_of = search(run, wscored, "weight_search", group=group, candidate="weight", none_value=0.0)
    save_scores(
        pd.concat([scored.assign(stage="layer"), wscored.assign(stage="weight")]), run.file("validation_scores.csv")
    )

    # 3. the test prompts over the weight grid at the chosen layer
    test_jobs = grid_jobs(test, "test", grid(layer_of, cfg.weights), specs, tags=tags)
    res = run_grid(run, model, test_jobs, cfg, phase="test", executor=executor, show_progress=show_progress)
    res["word_match"] = [word_match(j.row, t) for j, t in zip(test_jobs, res["response"])]
    res["chosen"] = [
        w == weight_of[(arm, with_instruction)]
        for arm, with_instruction, w in zip(res["arm"], res["with_instruction"], res["weight"])
    ]
    save_scores(res, run.file("scores.csv"))
    write_tables(run, res, layer_of, weight_of, norms, cfg)
    from workbench.report import write_report

    write_report(run.path)
    return run


def write_tables(
    run: RunDir, res: pd.DataFrame, layer_of: Choices, weight_of: Choices, norms: dict[int, float], cfg: KeywordsConfig
) -> None:
    """The weight sweeps (loose and word-match accuracy per weight at the chosen layer) and the
    headline: no steering vs the validation-chosen weight, per arm and condition."""
    for metric in ("loose", "word_match"):
        sweep = accuracy_table(
            res, ["arm", "with_instruction", "weight"], metric=metric, means=("distinct_2", "n_tokens")
        )
        sweep["layer"] = [layer_of[(a, w)] for a, w in zip(sweep["arm"], sweep["with_instruction"])]
        sweep["raw_weight"] = [
            raw_weight(c, layer, norms, cfg.weight_unit) if layer != NONE else 0.0
            for c, layer in zip(sweep["weight"], sweep["layer"])
        ]
        sweep.to_csv(run.file("tables", f"weight_sweep_{metric}.csv"), index=False)
    # the headline: no steering vs the validation-chosen weight (none vs none when 0 was chosen)
    head = res[(res["weight"] == 0) | res["chosen"]]
    head = pd.concat([head[head["weight"] == 0], head[head["chosen"]].assign(steered=True)]).drop_duplicates(
        ["arm", "with_instruction", "steered", "row_id"]
    )
    table = accuracy_table(head, ["arm", "with_instruction", "steered"], means=("word_match",))
    table["layer"] = [layer_of[(a, w)] for a, w in zip(table["arm"], table["with_instruction"])]
    table["weight"] = [
        weight_of[(a, w)] if s else 0.0 for a, w, s in zip(table["arm"], table["with_instruction"], table["steered"])
    ]
    table.to_csv(run.file("tables", "headline.csv"), index=False)
