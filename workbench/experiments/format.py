"""The paper's format experiment (Stolfo et al., section 4), as one call.

    from workbench.experiments.format import FormatConfig, run_format
    run = run_format(FormatConfig(limit=20), out="runs/format")       # or: workbench reproduce format

1. A vector per format instruction (per language for language:response_language) from training
   pairs on base queries that exclude every evaluation prompt's base query.
2. One search over layer x mode x strength on validation prompts (24 per instruction, on base
   queries disjoint from the test set, varied phrasings), separately with and without the
   instruction in the prompt: successive halving (experiments/search.py), selecting on
   "followed (IFEval loose) and not degenerate". Candidates: no steering, and at layers
   n_layers//5 .. last in steps of `layer_step`, `adjust` at the weights `adjust` (1.0: every
   position's projection set to z-bar, the paper's) and `add` at multiples `add` of the
   vector's raw norm.
3. The test prompts in four conditions: no instruction, + steering, instruction, + steering,
   each steered condition with the setting its search chose.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import workbench as wb
from workbench.data import FORMAT_INSTRUCTIONS, IFEvalRow, rows_hash
from workbench.executor import Executor
from workbench.experiments.checks import check_config, check_out, check_prompts_fit
from workbench.experiments.format_tables import fill_unsteered, write_tables
from workbench.experiments.jobs import Job, add_fluency, run_jobs, score_jobs, vectors_for_all
from workbench.experiments.rows import format_vector_pairs, languages, stratified_rows, validation_rows, vector_name
from workbench.experiments.rundir import RunDir
from workbench.experiments.search import Candidate, Halving, candidate_grid
from workbench.experiments.validation import search_validation
from workbench.models import load_args
from workbench.types import Model


@dataclass(frozen=True)
class FormatConfig:
    model: str = "smollm2-135m-instruct"
    data: str | None = None  # test file (IFEval JSONL); None: the 163 packaged format prompts
    without_data: str | None = None  # file with the requests without instructions, joined by key
    limit: int | None = None  # first N test prompts, taken round-robin over instructions
    n_pairs: int = 32  # training pairs per vector
    n_validation: int = 24  # validation prompts per instruction (the last search round's)
    layer_step: int = 3
    layers: tuple[int, ...] | None = None  # candidate layers; None: n_layers//5 .. last, step
    adjust: tuple[float, ...] = (1.0,)  # adjust weights searched
    add: tuple[float, ...] = (1.0,)  # add strengths searched, in units of the raw vector norm
    search_prompts: tuple[int, ...] = (3, 8, 24)  # validation prompts per round (cumulative)
    search_keep: tuple[int, ...] = (3, 2)  # steered candidates kept after each round but the last
    max_new_tokens: int = 96
    batch_size: int = 64  # larger batches amortise the bridge's per-step Python overhead
    seed: int = 0
    truncate: bool = False  # cut the start of prompts too long for the context (recorded)
    device: str | None = None  # "cpu" (None), "cuda", "cuda:1": where the model runs, workers too
    dtype: str | None = None  # "float32" (None), "bfloat16", "float16"
    device_map: str | None = None  # "auto", "balanced", "sequential": split the model over the GPUs

    QUICK: ClassVar[dict[str, Any]] = dict(  # a smoke-sized run: few pairs, prompts and layers, short answers
        n_pairs=8, n_validation=2, layer_step=8, max_new_tokens=32, search_prompts=(1, 2), search_keep=(1,), limit=13
    )

    @classmethod
    def quick(cls, **overrides: Any) -> FormatConfig:
        """A smoke-sized run: few pairs, few prompts, few layers, short answers."""
        return replace(cls(**cls.QUICK), **overrides)


def _job(
    phase: str, row: IFEvalRow, with_instruction: bool, cand: Candidate, vectors: dict[str, wb.SteeringVector]
) -> Job:
    """One prompt of `row` (with or without its instruction) under candidate `cand`."""
    iid = row.instruction_id_list[0]
    cond = "instruction" if with_instruction else "no_instruction"
    prompt = row.prompt if with_instruction else row.prompt_without_instruction or ""
    vec = vectors[vector_name(row)]
    spec = (wb.Steering(vec, cand.layer, cand.mode, cand.weight(vec)),) if cand.steered else ()
    tags = dict(
        row_id=row.row_id,
        instruction_id=iid,
        with_instruction=with_instruction,
        layer=cand.layer,
        mode=cand.mode,
        strength=cand.strength,
        steered=cand.steered,
    )
    return Job(f"{phase}/{cond}/{cand.label}/{row.row_id}", prompt, row, spec, tags)


def _test_jobs(
    rows: Sequence[IFEvalRow], vectors: dict[str, wb.SteeringVector], chosen: dict[tuple[str, bool], Candidate]
) -> list[Job]:
    """Each test row in both conditions, unsteered and (unless none was chosen) steered."""
    jobs = []
    for row in rows:
        for with_instruction in (False, True):
            best = chosen[(row.instruction_id_list[0], with_instruction)]
            jobs += [_job("test", row, with_instruction, c, vectors) for c in dict.fromkeys([Candidate(), best])]
    return jobs


def run_format(
    cfg: FormatConfig,
    out: str | Path,
    *,
    model: Model | None = None,
    executor: Executor | None = None,
    show_progress: bool | None = None,
) -> RunDir:
    """Run (or resume) the format experiment into `out`; returns the run directory.
    `executor`: where generation runs (workbench.executor; default this process)."""
    check_config(cfg)
    check_out(out)
    model = model or wb.load_model(cfg.model, **load_args(cfg))
    test = stratified_rows(wb.format_test_rows(cfg.data, cfg.without_data), cfg.limit)
    if not test:
        raise ValueError("no single-instruction format prompts in the test data")
    n_layers = model.cfg.n_layers
    layers = list(cfg.layers) if cfg.layers else list(range(n_layers // 5, n_layers, cfg.layer_step))
    if not all(0 <= layer < n_layers for layer in layers):
        raise ValueError(
            f"candidate layers {layers} are not all layers of {cfg.model} (0 to "
            f"{n_layers - 1}). Fix: --set layers=... within that range"
        )
    split = wb.split_queries(wb.base_queries(), exclude=test, seed=cfg.seed, validation=cfg.n_validation * 3)
    instructions = [i for i in FORMAT_INSTRUCTIONS if any(r.instruction_id_list[0] == i for r in test)]
    langs = languages(test)
    val_rows = [
        r for iid in instructions for r in validation_rows(split.validation, iid, langs, cfg.n_validation, cfg.seed)
    ]
    # the data against the model, before any compute: every prompt must fit the context
    check_prompts_fit(
        model,
        [
            (f"{tag} {r.key}", p)
            for tag, rows in (("test", test), ("validation", val_rows))
            for r in rows
            for p in (r.prompt, r.prompt_without_instruction)
            if p is not None
        ],
        max_new_tokens=cfg.max_new_tokens,
        truncate=cfg.truncate,
    )
    run = RunDir.open(out, "format", cfg, model=model, data_hash=rows_hash(test))
    run.record(
        "split",
        dict(
            n_train=len(split.train),
            n_validation=len(split.validation),
            excluded_eval_queries=split.excluded,
            seed=split.seed,
        ),
    )
    run.record("format", wb.default_format(model).to_dict())
    run.record("candidate_layers", layers)

    # 1. vectors
    pairs = format_vector_pairs(split.train, instructions, langs, n=cfg.n_pairs, seed=cfg.seed)
    wanted = {name: (name, p) for name, p in pairs.items()}
    vectors = vectors_for_all(run, model, wanted, batch_size=cfg.batch_size, executor=executor)

    # 2. the search on validation prompts, with and without the instruction
    candidates = candidate_grid(layers, adjust=cfg.adjust, add=cfg.add)
    groups = {
        (iid, w): [r for r in val_rows if r.instruction_id_list[0] == iid]
        for iid in instructions
        for w in (False, True)
    }

    def jobs_for(group: tuple[str, bool], rows: Sequence[IFEvalRow], cand: Candidate) -> list[Job]:
        return [_job("validation", r, group[1], cand, vectors) for r in rows]

    chosen = search_validation(
        run,
        model,
        groups,
        candidates,
        jobs_for,
        plan=Halving(prompts=cfg.search_prompts, keep=cfg.search_keep),
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        group_names=("instruction_id", "with_instruction"),
        truncate=cfg.truncate,
        executor=executor,
        show_progress=show_progress,
    )

    # 3. the test set in four conditions
    test_jobs = _test_jobs(test, vectors, chosen)
    res = run_jobs(
        run,
        model,
        test_jobs,
        phase="test",
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        truncate=cfg.truncate,
        executor=executor,
        show_progress=show_progress,
    )
    scored = add_fluency(model, score_jobs(test_jobs, res))  # perplexity reported on the test set
    scored["good"] = scored["loose"].astype(bool) & ~scored["degenerate"].astype(bool)
    # a condition whose chosen layer is "none" reuses the unsteered generation as its steered one
    scored = fill_unsteered(scored)
    scored.to_csv(run.file("scores.csv"), index=False, quoting=csv.QUOTE_NONNUMERIC)
    write_tables(run, scored)
    from workbench.report import write_report

    write_report(run.path)
    return run
