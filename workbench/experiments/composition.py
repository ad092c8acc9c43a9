"""Format and length at once (Stolfo et al., section 6), as one call.

    from workbench.experiments.composition import CompositionConfig, run_composition
    run = run_composition(CompositionConfig(limit=20), out="runs/composition")

Each test prompt is a base query with a format instruction (e.g. lowercase) and "Answer using at
most n sentences." Two vectors steer it, each at its own layer: the format vector, at the setting
the shared search (experiments/search.py, as in the format experiment) chooses per format
instruction, with and without the instruction, and the conciseness vector (`add` at the length
layer and weight, as in workbench.experiments.length). The search: successive halving over no
steering + layers x (`adjust` at the weights `adjust`, `add` at multiples `add` of the vector's
raw norm) on `n_validation` validation prompts per instruction (the format instruction alone,
base queries disjoint from the test ones, varied phrasings), selecting on "followed (loose) and
not degenerate"; a steered setting only where it strictly beats no steering. Four arms: none,
format alone, length alone, both (two Steering specs in one row's list); with and without the
two instructions in the prompt. Each condition is reported as a point (format accuracy, length
accuracy), loose IFEval verdicts.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd

import workbench as wb
from workbench.data import IFEvalRow, rows_hash
from workbench.executor import Executor
from workbench.experiments.checks import check_config, check_out, check_prompts_fit, row_prompts
from workbench.experiments.grid import (
    Settings,
    accuracy_table,
    depth_layer,
    instruction_verdicts,
    job_id,
    raw_weight,
    residual_norms,
    run_grid,
    save_scores,
    search_layers,
)
from workbench.experiments.jobs import Job, vectors_for_all
from workbench.experiments.length import SENTENCES, at_most, length_vectors, sentence_instruction
from workbench.experiments.rows import LANGUAGE, short_base_queries, validation_rows
from workbench.experiments.rundir import RunDir
from workbench.experiments.search import Candidate, Halving, candidate_grid
from workbench.experiments.validation import candidate_job, candidate_steering, search_validation
from workbench.models import load_args
from workbench.types import Model

ARMS = ("none", "format", "length", "both")


@dataclass(frozen=True)
class CompositionConfig(Settings):
    model: str = "smollm2-135m-instruct"
    limit: int | None = 40  # test prompts: base queries, each with one (format instruction, n)
    format_instructions: tuple[str, ...] = (
        "change_case:english_lowercase",
        "change_case:english_capital",
        "punctuation:no_comma",
        "startend:quotation",
    )
    max_sentences: int = 5
    n_pairs: int = 64  # training pairs per format vector
    n_length_pairs: int = 50  # training queries of the conciseness vector
    n_validation: int = 24  # validation prompts per format instruction (the last search round's)
    layer_step: int = 2
    layers: tuple[int, ...] | None = None  # format candidate layers; None: n_layers//5 .. last, step
    adjust: tuple[float, ...] = (1.0,)  # format vector: adjust weights searched
    add: tuple[float, ...] = (1.0,)  # format vector: add strengths searched, in units of its raw norm
    search_prompts: tuple[int, ...] = (3, 8, 24)  # validation prompts per round (cumulative)
    search_keep: tuple[int, ...] = (3, 2)  # steered candidates kept after each round but the last
    length_layer: int | None = None  # None: relative depth `depth`
    depth: float = 0.375
    length_weight: float = 20  # the paper's c for Phi-3
    weight_unit: str = "norm_percent"  # or "raw"
    max_new_tokens: int = 256
    # quick(): lowercase only, four short prompts, few pairs, few layers, short answers
    QUICK: ClassVar[dict[str, object]] = dict(
        limit=4,
        format_instructions=("change_case:english_lowercase",),
        n_pairs=8,
        n_length_pairs=8,
        n_validation=2,
        search_prompts=(1, 2),
        search_keep=(1,),
        layer_step=8,
        max_new_tokens=48,
        max_query_chars=300,
    )


def composed_rows(
    queries: Sequence[str], instructions: Sequence[str], max_sentences: int, seed: int
) -> list[IFEvalRow]:
    """Query i with the i-th (format instruction, n) of their product, cycled."""
    combos = list(itertools.product(instructions, range(1, max_sentences + 1)))
    rows = []
    for i, q in enumerate(queries):
        iid, n = combos[i % len(combos)]
        pair = wb.instruction_pairs([q], iid, seed=seed + i)[0]
        rows.append(
            IFEvalRow(
                f"c{i}",
                f"{pair.with_instruction} {sentence_instruction(n)}",
                (iid, SENTENCES),
                (pair.kwargs, at_most(n)),
                q,
                extra=dict(max_n=n),
            )
        )
    return rows


def run_composition(
    cfg: CompositionConfig,
    out: str | Path,
    *,
    model: Model | None = None,
    executor: Executor | None = None,
    show_progress: bool | None = None,
) -> RunDir:
    """Run (or resume) the composition experiment into `out`; returns the run directory."""
    check_config(cfg)
    if LANGUAGE in cfg.format_instructions:
        raise ValueError(f"{LANGUAGE} needs one vector per language; compose another format instruction")
    model = model or wb.load_model(cfg.model, **load_args(cfg))
    split = wb.split_queries(
        short_base_queries(cfg.max_query_chars), seed=cfg.seed, validation=cfg.n_validation + (cfg.limit or 40)
    )
    val_q, test_q = split.validation[: cfg.n_validation], split.validation[cfg.n_validation :]
    test = composed_rows(test_q, cfg.format_instructions, cfg.max_sentences, cfg.seed)
    check_out(out)
    check_prompts_fit(model, row_prompts(test), max_new_tokens=cfg.max_new_tokens)
    run = RunDir.open(out, "composition", cfg, model=model, data_hash=rows_hash(test))
    n_layers = model.cfg.n_layers
    layers = search_layers(n_layers, cfg.layer_step, cfg.layers)
    length_layer = cfg.length_layer if cfg.length_layer is not None else depth_layer(n_layers, cfg.depth)
    run.record("format", wb.default_format(model).to_dict())
    run.record("candidate_layers", layers)

    # vectors: one per format instruction, and the conciseness vector
    wanted = {
        iid: (iid, wb.instruction_pairs(split.train, iid, n=cfg.n_pairs, seed=cfg.seed))
        for iid in cfg.format_instructions
    }
    fmt = vectors_for_all(run, model, wanted, batch_size=cfg.batch_size, executor=executor)
    concise = length_vectors(
        run,
        model,
        split.train,
        n_pairs=cfg.n_length_pairs,
        seed=cfg.seed,
        classes=("extremely_concise",),
        batch_size=cfg.batch_size,
        executor=executor,
    )["extremely_concise"]
    norms = residual_norms(run, model, split.train[:16], [length_layer], batch_size=cfg.batch_size)
    length_raw = raw_weight(cfg.length_weight, length_layer, norms, cfg.weight_unit)
    run.record("length", dict(layer=length_layer, c=cfg.length_weight, unit=cfg.weight_unit, raw=length_raw))

    # the format vector's setting, searched as in the format experiment
    groups = {
        (iid, w): validation_rows(val_q, iid, [], cfg.n_validation, cfg.seed)
        for iid in cfg.format_instructions
        for w in (False, True)
    }

    def jobs_for(group: tuple[str, bool], rows: Sequence[IFEvalRow], cand: Candidate) -> list[Job]:
        return [candidate_job("validation", "format", r, group[1], cand, fmt) for r in rows]

    chosen = search_validation(
        run,
        model,
        groups,
        candidate_grid(layers, adjust=cfg.adjust, add=cfg.add),
        jobs_for,
        plan=Halving(prompts=cfg.search_prompts, keep=cfg.search_keep),
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        group_names=("instruction_id", "with_instruction"),
        executor=executor,
        show_progress=show_progress,
    )

    lengthen = wb.Steering(concise, length_layer, "add", length_raw)
    jobs = composed_jobs(test, chosen, fmt, lengthen)
    res = run_grid(run, model, jobs, cfg, phase="test", executor=executor, show_progress=show_progress)
    verdicts = instruction_verdicts(jobs, res)
    res["format_ok"] = [bool(verdicts.at[i, j.row.instruction_id_list[0]]) for i, j in enumerate(jobs)]
    res["length_ok"] = verdicts[SENTENCES].astype(bool).to_numpy()
    res["good"] = res["loose"].astype(bool) & ~res["degenerate"].astype(bool)  # the search's metric
    save_scores(res, run.file("scores.csv"))
    write_tables(run, res)
    from workbench.report import write_report

    write_report(run.path)
    return run


def composed_jobs(
    rows: Sequence[IFEvalRow],
    chosen: Mapping[tuple[str, bool], Candidate],
    fmt: Mapping[str, wb.SteeringVector],
    lengthen: wb.Steering,
) -> list[Job]:
    """Each test row with and without its instructions, in the four arms: the format vector at the
    candidate chosen for (its format instruction, condition), the conciseness spec `lengthen`,
    both (two specs in one row's list), or neither."""
    jobs = []
    for row in rows:
        for with_instruction in (False, True):
            cand = chosen[(row.instruction_id_list[0], with_instruction)]
            shape = candidate_steering(cand, fmt, row)
            prompt = row.prompt if with_instruction else row.prompt_without_instruction or ""
            for arm, steering in zip(ARMS, [(), shape, (lengthen,), (*shape, lengthen)]):
                tags = dict(
                    row_id=row.row_id,
                    arm=arm,
                    with_instruction=with_instruction,
                    steered=bool(steering),
                    format_instruction=row.instruction_id_list[0],
                    format_layer=cand.layer,
                    format_mode=cand.mode,
                    format_strength=cand.strength,
                    format_weight=float(shape[0].weight) if shape else 0.0,
                    length_layer=lengthen.layer,
                    max_n=row.extra["max_n"],
                )
                jobs.append(Job(job_id("test", arm, prompt, steering), prompt, row, steering, tags))
    return jobs


def write_tables(run: RunDir, res: pd.DataFrame) -> None:
    """Per condition: format, length and both-followed accuracy, and both followed and not
    degenerate (`good_`, what the search selects on), with Wilson intervals; fluency."""
    for by, name in (
        (["with_instruction", "arm"], "conditions"),
        (["format_instruction", "with_instruction", "arm"], "per_instruction"),
    ):
        table = accuracy_table(res, by, means=("n_tokens",)).set_index(by)
        table = table[["n", "n_tokens", "ppl_median", "degenerate"]]
        for metric, prefix in (
            ("format_ok", "format_"),
            ("length_ok", "length_"),
            ("loose", "both_"),
            ("good", "good_"),
        ):
            part = accuracy_table(res, by, metric=metric).set_index(by)
            table = table.join(part[["accuracy", "ci_low", "ci_high"]].add_prefix(prefix))
        table.reset_index().to_csv(run.file("tables", f"{name}.csv"), index=False)
