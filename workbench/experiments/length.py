"""The paper's length experiment (Stolfo et al., section 5.1), as one call.

    from workbench.experiments.length import LengthConfig, run_length
    run = run_length(LengthConfig(limit=10), out="runs/length")       # or: workbench reproduce length

1. Length vectors. Each training base query is paired with a length phrasing of one of five
   classes, from "extremely concise" to "extremely verbose" (PHRASINGS); the vector of a class is
   the mean over pairs of (query + phrasing) - (query), the paper's construction. The
   conciseness vector is the "extremely concise" class, the verbosity vector the "extremely
   verbose" one. With `baseline="opposite"` the conciseness vector contrasts the extremes instead:
   (query + extremely concise) - (query + extremely verbose), and the verbosity vector the reverse.
2. One search over layer x weight on validation prompts (experiments/search.py: successive
   halving, selecting on "followed (IFEval loose) and not degenerate"), per steered direction,
   with and without the instruction in the prompt. Validation prompts: n_validation base queries
   disjoint from the test and training ones, each with an "at most n sentences" instruction of
   varied n and phrasing (AT_MOST). Candidates: no steering, and `add` of the direction's vector
   at layers n_layers//5 .. last in steps of `layer_step` x the non-zero `weights`.
3. Test: evaluation queries x "Answer using at most n sentences." (n = 1..max_sentences), with
   and without the instruction, at the layer the search chose for (direction, condition) over
   the whole weight grid (weight 0 = no steering; where the search chose no steering, at its best
   steered finalist's layer); the headline is no steering vs the chosen (layer, weight). Scored
   by IFEval's length_constraints:number_sentences (relation "less than", n + 1: "at most n"),
   loose and strict, by the sentence count of its own tokenizer (count_sentences), and as
   `good` = followed and not degenerate.

Weights: the paper's c (20 at layer 12 for Phi-3) is in units of Phi-3's residual stream, whose
norm differs from a small model's. With weight_unit="norm_percent" (the default) c is a percent
of the mean residual norm at the steering layer (last prompt token of plain queries, measured at
every candidate layer), so a weight means the same push at any layer of any model; "raw" uses c
as given. A search candidate's `strength` is this c (not search.Candidate.weight's multiple of
the vector's norm); the tables carry c and the raw weight the hook adds.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import workbench as wb
from workbench.data import IFEvalRow, rows_hash
from workbench.executor import Executor
from workbench.experiments.checks import check_config, check_out, check_prompts_fit, row_prompts
from workbench.experiments.grid import (
    NONE,
    WEIGHT_UNITS,
    Settings,
    grid_jobs,
    raw_weight,
    residual_norms,
    run_grid,
    save_scores,
    search_layers,
)
from workbench.experiments.jobs import Job
from workbench.experiments.length_classes import DIRECTIONS, PHRASINGS
from workbench.experiments.length_classes import length_vectors as length_vectors  # noqa: PLC0414 (composition's import)
from workbench.experiments.length_tables import choices_table, write_tables
from workbench.experiments.rows import short_base_queries
from workbench.experiments.rundir import RunDir
from workbench.experiments.search import Candidate, Halving, candidate_grid, sweep_layers
from workbench.experiments.validation import search_validation
from workbench.models import load_args
from workbench.types import Model

SENTENCES = "length_constraints:number_sentences"
# "at most n sentences" in the validation prompts' varied phrasings (the test rows use the first)
AT_MOST = (
    "Answer using at most {n} sentence{s}.",
    "Respond in no more than {n} sentence{s}.",
    "Keep your reply to {n} sentence{s} or fewer.",
    "Use at most {n} sentence{s} in your answer.",
    "Your response must not exceed {n} sentence{s}.",
    "Limit your answer to {n} sentence{s} at most.",
)
Group = tuple[str, bool]  # (direction, with_instruction): what the search chooses per


@dataclass(frozen=True)
class LengthConfig(Settings):
    model: str = "smollm2-135m-instruct"
    limit: int | None = 50  # evaluation base queries (the paper: 50; None: 50)
    n_pairs: int = 50  # training base queries per length class (the paper: 50)
    max_sentences: int = 5  # "at most n sentences", n = 1..max_sentences
    baseline: str = "plain"  # "plain": class vs the bare query (the paper); "opposite": extremes contrasted
    directions: tuple[str, ...] = ("concise",)  # vectors steered with ("verbose" too, to lengthen)
    all_classes: bool = True  # derive all five classes (their cosines), not only the steered ones
    n_validation: int = 24  # validation prompts (base queries) per group, the last search round's
    layer_step: int = 3
    layers: tuple[int, ...] | None = None  # candidate layers; None: n_layers//5 .. last, step
    weights: tuple[float, ...] = (0, 5, 10, 20, 40)  # searched (non-zero ones) and the test curve; 0 = none
    weight_unit: str = "norm_percent"  # or "raw"
    search_prompts: tuple[int, ...] = (3, 8, 24)  # validation prompts per round (cumulative)
    search_keep: tuple[int, ...] = (3, 2)  # steered candidates kept after each round but the last
    max_new_tokens: int = 256
    # quick(): two short queries, the conciseness vector only, few pairs, layers and prompts, two
    # weights, short answers
    QUICK: ClassVar[dict[str, object]] = dict(
        limit=2,
        n_pairs=8,
        weights=(0, 20),
        max_new_tokens=48,
        all_classes=False,
        max_query_chars=300,
        n_validation=2,
        layer_step=8,
        search_prompts=(1, 2),
        search_keep=(1,),
    )


def sentence_instruction(n: int) -> str:
    return f"Answer using at most {n} sentence{'s' if n > 1 else ''}."


def at_most(n: int) -> dict[str, Any]:
    """IFEval kwargs for "at most n sentences" (its relations are "less than" and "at least")."""
    return {"relation": "less than", "num_sentences": n + 1}


def length_rows(
    queries: Sequence[str], max_sentences: int, instruction: Callable[[int], str] = sentence_instruction
) -> list[IFEvalRow]:
    """Every query with "at most n sentences" for n = 1..max_sentences (the verifier's kwargs)."""
    return [
        IFEvalRow(f"q{i}/n{n}", f"{q} {instruction(n)}", (SENTENCES,), (at_most(n),), q, extra=dict(query=i, max_n=n))
        for i, q in enumerate(queries)
        for n in range(1, max_sentences + 1)
    ]


def validation_rows(queries: Sequence[str], max_sentences: int, *, seed: int) -> list[IFEvalRow]:
    """One row per query: "at most n sentences" with n cycling through 1..max_sentences (so every
    prefix a search round takes is balanced) in a phrasing drawn from AT_MOST."""
    rng = random.Random(f"{seed}/length-validation")
    rows = []
    for i, q in enumerate(queries):
        n = 1 + i % max_sentences
        text = rng.choice(AT_MOST).format(n=n, s="s" if n > 1 else "")
        rows.append(
            IFEvalRow(f"val/q{i}/n{n}", f"{q} {text}", (SENTENCES,), (at_most(n),), q, extra=dict(query=i, max_n=n))
        )
    return rows


def run_length(
    cfg: LengthConfig,
    out: str | Path,
    *,
    model: Model | None = None,
    executor: Executor | None = None,
    show_progress: bool | None = None,
) -> RunDir:
    """Run (or resume) the length experiment into `out`; returns the run directory."""
    from workbench.scoring import count_sentences

    check_config(cfg)
    unknown = set(cfg.directions) - set(DIRECTIONS)
    if unknown or cfg.weight_unit not in WEIGHT_UNITS:
        raise ValueError(
            f"unknown length directions {sorted(unknown)} (use {sorted(DIRECTIONS)}) or weight unit "
            f"{cfg.weight_unit!r} (use one of {WEIGHT_UNITS})"
        )
    check_out(out)
    model = model or wb.load_model(cfg.model, **load_args(cfg))
    n_layers = model.cfg.n_layers
    layers = search_layers(n_layers, cfg.layer_step, cfg.layers)
    if not all(0 <= layer < n_layers for layer in layers):
        raise ValueError(f"candidate layers {layers} are not all layers of {cfg.model} (0 to {n_layers - 1})")
    n_test = cfg.limit or 50
    queries = short_base_queries(cfg.max_query_chars)
    split = wb.split_queries(queries, seed=cfg.seed, validation=n_test + cfg.n_validation)
    rows = length_rows(split.validation[:n_test], cfg.max_sentences)
    val_rows = validation_rows(split.validation[n_test:], cfg.max_sentences, seed=cfg.seed)
    if len(val_rows) < cfg.n_validation:
        raise ValueError(f"{len(queries)} base queries leave {len(val_rows)} for validation, not {cfg.n_validation}")
    check_prompts_fit(model, row_prompts([*rows, *val_rows]), max_new_tokens=cfg.max_new_tokens)
    run = RunDir.open(out, "length", cfg, model=model, data_hash=rows_hash([*rows, *val_rows]))
    run.record("format", wb.default_format(model).to_dict())
    run.record("split", dict(n_train=len(split.train), n_test=n_test, n_validation=len(val_rows), seed=split.seed))
    run.record("candidate_layers", layers)

    classes = tuple(PHRASINGS) if cfg.all_classes else tuple(DIRECTIONS[d] for d in cfg.directions)
    vectors = length_vectors(
        run,
        model,
        split.train,
        n_pairs=cfg.n_pairs,
        seed=cfg.seed,
        baseline=cfg.baseline,
        classes=classes,
        batch_size=cfg.batch_size,
        executor=executor,
    )
    norms = residual_norms(run, model, split.train[:16], layers, batch_size=cfg.batch_size)
    steer = {d: vectors[DIRECTIONS[d]] for d in cfg.directions}
    weights = [float(c) for c in dict.fromkeys(cfg.weights) if c]  # the steered ones
    run.record(
        "weights",
        [
            dict(layer=layer, c=c, raw=raw_weight(c, layer, norms, cfg.weight_unit), unit=cfg.weight_unit)
            for layer in layers
            for c in weights
        ],
    )

    def specs(direction: str, row: IFEvalRow | None, layer: int, c: float) -> list[wb.Steering]:
        return [wb.Steering(steer[direction], layer, "add", raw_weight(c, layer, norms, cfg.weight_unit))]

    # 1. the search on validation prompts, per direction, with and without the instruction
    def jobs_for(group: Group, rows: Sequence[IFEvalRow], cand: Candidate) -> list[Job]:
        return [
            _job(group, r, cand, specs(group[0], r, cand.layer, cand.strength) if cand.steered else []) for r in rows
        ]

    def sweep_layer(chosen: dict[Group, Candidate]) -> dict[Group, int | None]:
        return sweep_layers(run.state["choices"]["search_rounds"], chosen, ("arm", "with_instruction"))

    chosen = search_validation(
        run,
        model,
        {(d, w): val_rows for d in cfg.directions for w in (False, True)},
        candidate_grid(layers, adjust=(), add=weights),
        jobs_for,
        plan=Halving(prompts=cfg.search_prompts, keep=cfg.search_keep),
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        group_names=("arm", "with_instruction"),
        describe=lambda chosen: choices_table(chosen, sweep_layer(chosen), norms, cfg.weight_unit),
        executor=executor,
        show_progress=show_progress,
    )
    curve = sweep_layer(chosen)

    # 2. the test prompts over the weight grid, at the layer of each (direction, condition)
    def candidates(row: IFEvalRow, with_instruction: bool) -> list[tuple[str, int, float]]:
        out = []
        for d in cfg.directions:
            layer = curve[(d, with_instruction)]
            out += [(d, NONE, 0.0)] + ([(d, layer, c) for c in weights] if layer is not None else [])
        return out

    jobs = grid_jobs(rows, "test", candidates, specs, tags=lambda r: dict(r.extra))
    scored = run_grid(run, model, jobs, cfg, phase="test", executor=executor, show_progress=show_progress)
    scored["n_sentences"] = [count_sentences(t) for t in scored["response"]]
    scored["at_most_n"] = (scored["n_sentences"] <= scored["max_n"]) & scored["response"].str.strip().astype(bool)
    scored["n_words"] = [len(t.split()) for t in scored["response"]]
    # a loop cut at max_new_tokens can pass "at most n sentences" (no sentence ever ends)
    scored["loose_not_degenerate"] = scored["loose"].astype(bool) & ~scored["degenerate"].astype(bool)
    save_scores(scored, run.file("scores.csv"))
    write_tables(run, scored, vectors, chosen, curve, layers)
    from workbench.report import write_report

    write_report(run.path)
    return run


def _job(group: Group, row: IFEvalRow, cand: Candidate, steering: Sequence[wb.Steering]) -> Job:
    """One validation prompt of `row` (with or without its instruction) under `cand`; the id names
    the group, so no steering has one job per direction (generated once: search.Evaluator)."""
    direction, with_instruction = group
    prompt = row.prompt if with_instruction else row.prompt_without_instruction or ""
    cond = "instruction" if with_instruction else "no_instruction"
    tags = dict(
        row_id=row.row_id,
        arm=direction,
        with_instruction=with_instruction,
        layer=cand.layer,
        weight=cand.strength,
        steered=cand.steered,
        **row.extra,
    )
    return Job(f"validation/{direction}/{cond}/{cand.label}/{row.row_id}", prompt, row, tuple(steering), tags)
