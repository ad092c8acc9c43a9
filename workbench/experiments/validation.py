"""The validation phase of the experiments after format: the shared search (experiments/search.py)
over layer x mode x strength per group, its jobs, and its tables.

    cands = candidate_grid(layers, adjust=(1.0,), add=(1.0,))
    def jobs_for(group, rows, cand):
        arm, _, with_instruction = group
        return [candidate_job("validation", arm, r, with_instruction, cand, vectors[arm]) for r in rows]
    chosen = search_validation(run, model, groups, cands, jobs_for, plan=Halving((3, 8, 24), (3, 2)),
                               max_new_tokens=128, batch_size=64,
                               group_names=("arm", "instruction_id", "with_instruction"))
    chosen[("own", "change_case:english_lowercase", True)]   # -> Candidate(layer=12, mode="adjust", ...)

Writes tables/search_rounds.csv (every round, every candidate), tables/search_choices.csv (per
group the chosen label, layer, mode and strength, or the experiment's own table: `describe`),
validation_scores.csv (every scored line), and records search_plan, search_rounds and chosen in
run.json.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd

import workbench as wb
from workbench.data import IFEvalRow
from workbench.experiments.grid import save_scores
from workbench.experiments.jobs import Job
from workbench.experiments.rows import vector_name
from workbench.experiments.rundir import RunDir
from workbench.experiments.search import Candidate, Evaluator, GroupT, Halving, successive_halving
from workbench.steering import Steering

if TYPE_CHECKING:
    from workbench.executor import Executor
    from workbench.types import Model


def candidate_steering(
    cand: Candidate, vectors: Mapping[str, wb.SteeringVector], row: IFEvalRow, *, cross_model: bool = False
) -> tuple[Steering, ...]:
    """The steering of `cand` on `row` with the row's own vector (`vectors[rows.vector_name(row)]`);
    no steering for Candidate(). `cross_model`: the vector is another model's, carried here."""
    if not cand.steered:
        return ()
    vec = vectors[vector_name(row)]
    return (wb.Steering(vec, cand.layer, cand.mode, cand.weight(vec), allow_cross_model=cross_model),)


def candidate_job(
    phase: str,
    arm: str,
    row: IFEvalRow,
    with_instruction: bool,
    cand: Candidate,
    vectors: Mapping[str, wb.SteeringVector],
    *,
    cross_model: bool = False,
) -> Job:
    """One prompt of `row` (with or without its instruction) under `cand` with the vectors of
    `arm`. The id names phase, arm, condition, candidate and row: unique within a search, where
    the unsteered request without its instruction recurs in every group (generate_shared makes
    it once; each group scores it against its own row)."""
    prompt = row.prompt if with_instruction else row.prompt_without_instruction
    if prompt is None:
        raise ValueError(f"row {row.key!r} has no prompt without its instruction")
    steering = candidate_steering(cand, vectors, row, cross_model=cross_model)
    tags = dict(
        row_id=row.row_id,
        arm=arm,
        instruction_id=row.instruction_id_list[0],
        with_instruction=with_instruction,
        layer=cand.layer,
        mode=cand.mode,
        strength=cand.strength,
        weight=float(steering[0].weight) if steering else 0.0,
        steered=cand.steered,
        label=cand.label,
    )
    cond = "instruction" if with_instruction else "no_instruction"
    return Job(f"{phase}/{arm}/{cond}/{cand.label}/{row.row_id}", prompt, row, steering, tags)


def search_validation(
    run: RunDir,
    model: Model,
    groups: Mapping[GroupT, Sequence[IFEvalRow]],
    candidates: Sequence[Candidate],
    jobs_for: Callable[[GroupT, Sequence[IFEvalRow], Candidate], list[Job]],
    *,
    plan: Halving,
    max_new_tokens: int,
    batch_size: int,
    group_names: Sequence[str],
    truncate: bool = False,
    describe: Callable[[dict[GroupT, Candidate]], pd.DataFrame] | None = None,
    executor: Executor | None = None,
    show_progress: bool | None = None,
) -> dict[GroupT, Candidate]:
    """successive_halving over `candidates` per group of validation rows (named "search"), each
    distinct generation made once and resumable; writes its tables (module docstring). Returns
    {group: chosen candidate}. `truncate`: cut the start of prompts too long for the context.
    `describe`: {group: chosen} -> the choices table (default: `choices_table`), written to
    tables/search_choices.csv and recorded as "chosen"."""
    evaluate = Evaluator(
        run,
        model,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        truncate=truncate,
        executor=executor,
        show_progress=show_progress,
    )
    chosen = successive_halving(
        run, groups, candidates, jobs_for, evaluate, plan=plan, name="search", group_names=group_names
    )
    save_scores(evaluate.table(), run.file("validation_scores.csv"))
    choices = describe(chosen) if describe else choices_table(chosen, group_names)
    choices.to_csv(run.file("tables", "search_choices.csv"), index=False)
    run.record("chosen", choices.to_dict("records"))
    return chosen


def choices_table(chosen: Mapping[GroupT, Candidate], group_names: Sequence[str]) -> pd.DataFrame:
    """Per group (its fields named by `group_names`) the chosen label, layer, mode and strength."""
    return pd.DataFrame(
        [
            dict(
                zip(group_names, g if isinstance(g, tuple) else (g,)),
                label=c.label,
                layer=c.layer,
                mode=c.mode,
                strength=c.strength,
            )
            for g, c in chosen.items()
        ]
    )
