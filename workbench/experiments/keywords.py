"""The paper's word experiment (Stolfo et al., section 5.2): include or exclude a word, as one call.

    from workbench.experiments.keywords import KeywordsConfig, run_keywords
    run = run_keywords(KeywordsConfig(), out="runs/keywords")        # or: workbench reproduce keywords

1. Vectors per word: the inclusion vector from pairs (base query + "include the word X") vs
   (base query), n_pairs base queries per word (the paper: 20); the exclusion vector likewise from
   "do not use the word X". Training queries exclude every evaluation and validation query.
2. Three arms, all `add`:
   - include: + the inclusion vector (keywords:existence prompts);
   - exclude_subtract: - the inclusion vector, the paper's exclusion (keywords:forbidden_words);
   - exclude_vector: + the exclusion vector, which the paper found does not work (the
     instruction to avoid a word mentions it), kept so that can be seen.
   A prompt with several words gets one spec per word at weight c / n_words (the paper's split).
3. One search over layer x weight per arm, with and without the instruction in the prompt, on
   the packaged validation files (inclusion_validation.jsonl, exclusion_validation.jsonl:
   n_validation prompts each, varied phrasings, none on a test prompt's request): successive
   halving (experiments/search.py), selecting on "followed (IFEval loose) and not degenerate".
   Candidates: no steering, and every layer (n_layers//5 .. last, step 2) x every non-zero
   weight of `weights`.
4. Test: IFEval's single-instruction keyword prompts, each arm at its chosen layer over the
   whole weight grid (accuracy and fluency vs weight), the chosen weight as the headline (where
   no steering won, the sweep runs at the best steered finalist's layer and the headline is no
   steering). Scored by the IFEval verifier (loose; note keywords:existence matches substrings),
   by "followed and not degenerate" (good), and by a case-insensitive word-boundary match of
   every word (word_match).

Weights are percents of the layer's mean residual norm by default (see workbench.experiments.length).
A search candidate is Candidate(layer, "add", strength=c) with c in that unit, so its
Candidate.weight() (a multiple of the vector's own norm) does not apply: `specs` makes the hooks'
weight with grid.raw_weight.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import workbench as wb
from workbench.data import IFEvalRow, data_path, rows_hash
from workbench.executor import Executor
from workbench.experiments.checks import check_config, check_out, check_prompts_fit, row_prompts
from workbench.experiments.grid import (
    NONE,
    Settings,
    grid_jobs,
    raw_weight,
    residual_norms,
    run_grid,
    save_scores,
    search_layers,
)
from workbench.experiments.jobs import Job, vectors_for_all
from workbench.experiments.keywords_tables import Group, choices_table, write_tables
from workbench.experiments.rows import short_base_queries, short_rows
from workbench.experiments.rundir import RunDir
from workbench.experiments.search import Candidate, Halving, candidate_grid, sweep_layers
from workbench.experiments.validation import search_validation
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
    n_validation: int = 24  # validation prompts per file (the last search round's)
    layer_step: int = 2
    layers: tuple[int, ...] | None = None  # candidate layers; None: n_layers//5 .. last, step
    weights: tuple[float, ...] = (0, 10, 20, 40, 80)  # searched (all but 0) and swept on test; 0 = none
    weight_unit: str = "norm_percent"  # or "raw"
    search_prompts: tuple[int, ...] = (3, 8, 24)  # validation prompts per round (cumulative)
    search_keep: tuple[int, ...] = (3, 2)  # steered candidates kept after each round but the last
    # quick(): two short prompts per kind, few pairs, few layers, one weight, short answers
    QUICK: ClassVar[dict[str, object]] = dict(
        limit=2,
        n_pairs=6,
        n_validation=2,
        layer_step=8,
        weights=(0, 40),
        max_new_tokens=32,
        max_query_chars=300,
        search_prompts=(1, 2),
        search_keep=(1,),
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


def _validation_rows(n: int, seed: int, test: Sequence[IFEvalRow]) -> list[IFEvalRow]:
    """n prompts of each validation file, in a seeded random order (the search's rounds take the
    first ones), none on a request of the test set."""
    taken = {r.prompt_without_instruction for r in test}
    out = []
    for name in ("inclusion_validation.jsonl", "exclusion_validation.jsonl"):
        rows = [r for r in wb.load_ifeval(data_path(name)) if r.prompt_without_instruction not in taken]
        out += [
            replace(
                r, key=f"val/{r.instruction_id_list[0]}/{r.key}", row_id=f"val/{r.instruction_id_list[0]}/{r.row_id}"
            )
            for r in random.Random(seed).sample(rows, min(n, len(rows)))
        ]
    return out


Specs = Callable[[str, IFEvalRow, int, float], list[wb.Steering]]


def _validation_job(arm: str, row: IFEvalRow, with_instruction: bool, cand: Candidate, specs: Specs) -> Job:
    """One validation prompt of `arm` under `cand`. The id names the row: two rows may share a
    request, and each is scored against its own words (equal texts are generated once)."""
    prompt = (row.prompt if with_instruction else row.prompt_without_instruction) or ""
    steering = tuple(specs(arm, row, cand.layer, cand.strength)) if cand.steered else ()
    tags = dict(
        row_id=row.row_id,
        arm=arm,
        instruction_id=row.instruction_id_list[0],
        with_instruction=with_instruction,
        layer=cand.layer,
        weight=cand.strength,
        steered=cand.steered,
        words=words(row),
    )
    cond = "instruction" if with_instruction else "no_instruction"
    return Job(f"validation/{arm}/{cond}/{cand.label}/{row.row_id}", prompt, row, steering, tags)


def run_keywords(
    cfg: KeywordsConfig,
    out: str | Path,
    *,
    model: Model | None = None,
    executor: Executor | None = None,
    show_progress: bool | None = None,
) -> RunDir:
    """Run (or resume) the keyword experiment into `out`; returns the run directory."""
    check_config(cfg)
    unknown = set(cfg.arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown keyword arms {sorted(unknown)}: use {list(ARMS)}")
    check_out(out)
    model = model or wb.load_model(cfg.model, **load_args(cfg))
    test = _test_rows(cfg)
    if not test:
        raise ValueError("no single-instruction keyword prompts in the test data")
    val = _validation_rows(cfg.n_validation, cfg.seed, test)
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

    # 2. one search over layer x weight per arm and condition, on validation prompts
    groups = {
        (a, w): [r for r in val if r.instruction_id_list[0] == ARMS[a][0]] for a in cfg.arms for w in (False, True)
    }

    def jobs_for(group: Group, rows: Sequence[IFEvalRow], cand: Candidate) -> list[Job]:
        return [_validation_job(group[0], r, group[1], cand, specs) for r in rows]

    def sweep_layer(chosen: dict[Group, Candidate]) -> dict[Group, int]:
        found = sweep_layers(run.state["choices"]["search_rounds"], chosen, ("arm", "with_instruction"))
        return {g: NONE if layer is None else layer for g, layer in found.items()}

    chosen = search_validation(
        run,
        model,
        groups,
        candidate_grid(layers, adjust=(), add=[c for c in cfg.weights if c]),
        jobs_for,
        plan=Halving(prompts=cfg.search_prompts, keep=cfg.search_keep),
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        group_names=("arm", "with_instruction"),
        describe=lambda chosen: choices_table(chosen, sweep_layer(chosen), norms, cfg.weight_unit),
        executor=executor,
        show_progress=show_progress,
    )
    sweep_at = sweep_layer(chosen)

    # 3. the test prompts over the weight grid at the chosen (or swept) layer
    def candidates_of(row: IFEvalRow, with_instruction: bool) -> list[tuple[str, int, float]]:
        arms = [a for a in cfg.arms if ARMS[a][0] == row.instruction_id_list[0]]
        return [(a, NONE, 0.0) for a in arms] + [
            (a, sweep_at[(a, with_instruction)], c) for a in arms for c in cfg.weights if c
        ]

    test_jobs = grid_jobs(test, "test", candidates_of, specs, tags=lambda row: dict(words=words(row)))
    res = run_grid(run, model, test_jobs, cfg, phase="test", executor=executor, show_progress=show_progress)
    res["word_match"] = [word_match(j.row, t) for j, t in zip(test_jobs, res["response"])]
    res["good"] = res["loose"].astype(bool) & ~res["degenerate"].astype(bool)
    weight_of = {g: c.strength if c.steered else 0.0 for g, c in chosen.items()}
    res["chosen"] = [weight_of[(a, w)] == c for a, w, c in zip(res["arm"], res["with_instruction"], res["weight"])]
    save_scores(res, run.file("scores.csv"))
    write_tables(run, res, chosen, sweep_at, norms, cfg.weight_unit)
    from workbench.report import write_report

    write_report(run.path)
    return run
