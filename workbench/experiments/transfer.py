"""Vectors from one model steering another (Stolfo et al., section 4.3: instruct -> base), as one call.

    from workbench.experiments.transfer import TransferConfig, run_transfer
    run = run_transfer(TransferConfig(source="tiny-instruct", target="tiny-base"), out="runs/transfer")

The format experiment on a target model with two vector sources: the target's own vectors, and
vectors derived (with their z-bar) on the source model, each prompted in its own format (a base
target as `Q: ...\\nA:`, stopping at "\\nQ:"). The shared search (experiments/search.py) runs
on the target per vector source x instruction x condition (with or without the instruction):
successive halving over no steering + layers x strengths in the mode `mode` (`adjust` weights,
the paper's; or `add` multiples of the vector's raw norm), on `n_validation` validation prompts
per instruction (base queries disjoint from the test set, varied phrasings), selecting on
"followed (loose) and not degenerate"; a steered setting only where it strictly beats no
steering. The test table is the paper's: target alone / target's own vector / source's vector,
with and without the instruction in the prompt, each at the setting its search chose.

Carrying a source vector to the target, for each candidate target layer t: the source layer s at
the nearest relative depth (analysis.matched_layers; the identity for equal depths) gives the
direction. Equal widths use it as it is, with the source's z-bar (the paper; z_bar_from="target"
recomputes it as below), and steer with allow_cross_model=True. Unequal widths are refused unless
a linear map is given (linear_map: a directory of maps saved by analysis.save_linear_map as
src{s}_tgt{t}, e.g. by analysis.fit_model_maps(...).save(dir)) or fitted here (fit_map: ridge /
Procrustes by analysis.fit_model_maps on `map_texts` neutral texts, the training base queries
without instructions, read by both models with positions aligned on characters, per matched
layer pair, saved under maps/): the direction is mapped
(LinearMap.apply_direction), renormalised, and z-bar recomputed as the mean projection of the
target's own with-instruction activations (the training pairs) on the mapped direction. A
carried vector's raw norm (the unit of `add`) is the source's raw vector, mapped when mapped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import pandas as pd

import workbench as wb
from workbench.analysis.transfer import target_matched_layers
from workbench.data import IFEvalRow, rows_hash
from workbench.executor import Executor
from workbench.experiments.checks import check_config, check_out, check_prompts_fit, row_prompts
from workbench.experiments.grid import Settings, accuracy_table, job_id, run_grid, save_scores, search_layers
from workbench.experiments.jobs import Job, vectors_for_all
from workbench.experiments.rows import (
    format_vector_pairs,
    languages,
    short_base_queries,
    short_rows,
    stratified_rows,
    validation_rows,
)
from workbench.experiments.rundir import RunDir
from workbench.experiments.search import MODES, Candidate, Halving, candidate_grid
from workbench.experiments.transfer_vectors import carry, transfer_maps
from workbench.experiments.validation import candidate_job, search_validation
from workbench.models import load_args, model_info
from workbench.types import Model

ARMS = ("own", "source")


@dataclass(frozen=True)
class TransferConfig(Settings):
    source: str = "smollm2-135m-instruct"
    target: str = "gemma3-270m"
    data: str | None = None  # test file (IFEval JSONL); None: the 163 packaged format prompts
    without_data: str | None = None
    limit: int | None = None  # first N test prompts, round-robin over instructions
    n_pairs: int = 64
    n_validation: int = 24  # validation prompts per instruction (the last search round's)
    layer_step: int = 2
    layers: tuple[int, ...] | None = None  # target candidate layers; None: n_layers//5 .. last, step
    mode: str = "adjust"  # the mode searched: "adjust" (the paper's), "add" or "ablate"
    strengths: tuple[float, ...] = (1.0,)  # searched: adjust/ablate weights, or add's multiples of the raw norm
    search_prompts: tuple[int, ...] = (3, 8, 24)  # validation prompts per round (cumulative)
    search_keep: tuple[int, ...] = (3, 2)  # steered candidates kept after each round but the last
    z_bar_from: str = "source"  # equal widths: "source" (the paper) or "target"
    fit_map: bool = False  # unequal widths: fit a linear map per matched layer pair
    linear_map: str | None = None  # or a directory of saved maps src{s}_tgt{t}
    map_method: str = "ridge"  # or "procrustes"
    map_alpha: float = 10.0
    map_texts: int = 200  # neutral texts (training base queries, no instruction) the map is fitted on
    # quick(): few pairs, few short prompts, few layers, short answers
    QUICK: ClassVar[dict[str, object]] = dict(
        n_pairs=8,
        n_validation=2,
        search_prompts=(1, 2),
        search_keep=(1,),
        layer_step=8,
        max_new_tokens=32,
        limit=4,
        max_query_chars=300,
    )


def run_transfer(
    cfg: TransferConfig,
    out: str | Path,
    *,
    source: Model | None = None,
    target: Model | None = None,
    executor: Executor | None = None,
    show_progress: bool | None = None,
) -> RunDir:
    """Run (or resume) the transfer experiment into `out`; returns the run directory."""
    check_config(cfg)
    if cfg.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {cfg.mode!r}")
    if cfg.z_bar_from not in ("source", "target"):
        raise ValueError(f"z_bar_from must be 'source' or 'target', got {cfg.z_bar_from!r}")
    source = source or wb.load_model(cfg.source, **load_args(cfg))
    target = target or wb.load_model(cfg.target, **load_args(cfg))
    rows = short_rows(wb.format_test_rows(cfg.data, cfg.without_data), cfg.max_query_chars)
    test = stratified_rows(rows, cfg.limit)
    if not test:
        raise ValueError("no single-instruction format prompts in the test data")
    src = model_info(source)
    data_hash = hashlib.sha256((rows_hash(test) + src.name + src.weight_hash).encode()).hexdigest()
    check_out(out)
    check_prompts_fit(target, row_prompts(test), max_new_tokens=cfg.max_new_tokens)
    run = RunDir.open(out, "transfer", cfg, model=target, data_hash=data_hash)
    run.record("source", src.to_dict())
    run.record(
        "formats", {name: wb.default_format(m).to_dict() for name, m in (("source", source), ("target", target))}
    )
    layers = search_layers(target.cfg.n_layers, cfg.layer_step, cfg.layers)
    matched = target_matched_layers(source.cfg.n_layers, target.cfg.n_layers)
    layer_pairs = [p for p in matched if p.target in layers]
    run.record("candidate_layers", layers)
    run.record("layer_pairs", [dict(target_layer=p.target, source_layer=p.source) for p in layer_pairs])
    split = wb.split_queries(
        short_base_queries(cfg.max_query_chars), exclude=test, seed=cfg.seed, validation=cfg.n_validation * 3
    )
    langs = languages(test)
    instructions = list(dict.fromkeys(r.instruction_id_list[0] for r in test))

    # vectors: the target's own, the source's, and the source's carried to the target's layers
    pairs = format_vector_pairs(split.train, instructions, langs, n=cfg.n_pairs, seed=cfg.seed)
    wanted = {arm: {name: (f"{arm}/{name}", p) for name, p in pairs.items()} for arm in ARMS}
    own = vectors_for_all(run, target, wanted["own"], batch_size=cfg.batch_size, executor=executor)
    theirs = vectors_for_all(run, source, wanted["source"], batch_size=cfg.batch_size, executor=executor)
    maps = transfer_maps(run, source, target, list(split.train[: cfg.map_texts]), cfg, layer_pairs)
    carried = {}
    for name, vec in theirs.items():
        path = run.path / "vectors" / "carried" / f"{name.replace(':', '__')}.safetensors"
        if not path.exists():
            acts = None
            if maps is not None or cfg.z_bar_from == "target":
                targets = [p.target for p in layer_pairs]
                acts = wb.cache_pairs(
                    target, pairs[name], layers=targets, batch_size=cfg.batch_size, show_progress=False
                )
            carry(vec, target, layer_pairs, maps, acts).save(path)
        carried[name] = wb.SteeringVector.load(path)
    vectors = {"own": own, "source": carried}

    # the search on the target, per vector source x instruction x condition
    groups = {
        (arm, iid, w): validation_rows(split.validation, iid, langs, cfg.n_validation, cfg.seed)
        for arm in ARMS
        for iid in instructions
        for w in (False, True)
    }

    def jobs_for(group: tuple[str, str, bool], rows: Sequence[IFEvalRow], cand: Candidate) -> list[Job]:
        arm, _, with_instruction = group
        return [
            candidate_job("validation", arm, r, with_instruction, cand, vectors[arm], cross_model=arm == "source")
            for r in rows
        ]

    chosen = search_validation(
        run,
        target,
        groups,
        candidate_grid(layers, **{"adjust": (), cfg.mode: cfg.strengths}),
        jobs_for,
        plan=Halving(prompts=cfg.search_prompts, keep=cfg.search_keep),
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        group_names=("arm", "instruction_id", "with_instruction"),
        executor=executor,
        show_progress=show_progress,
    )

    # the test prompts: target alone, its own vector, the source's vector, each as chosen
    jobs = [
        _test_job(row, with_instruction, arm, cand, vectors)
        for row in test
        for with_instruction in (False, True)
        for arm, cand in [
            ("none", Candidate()),
            *((arm, chosen[(arm, row.instruction_id_list[0], with_instruction)]) for arm in ARMS),
        ]
    ]
    res = run_grid(run, target, jobs, cfg, phase="test", executor=executor, show_progress=show_progress)
    res["good"] = res["loose"].astype(bool) & ~res["degenerate"].astype(bool)  # the search's metric
    save_scores(res, run.file("scores.csv"))
    for metric in ("loose", "strict", "good"):
        accuracy_table(res, ["with_instruction", "arm"], metric=metric).to_csv(
            run.file("tables", f"conditions_{metric}.csv"), index=False
        )
        accuracy_table(res, ["instruction_id", "with_instruction", "arm"], metric=metric).to_csv(
            run.file("tables", f"per_instruction_{metric}.csv"), index=False
        )
    paired_tables(res, run)
    from workbench.report import write_report

    write_report(run.path)
    return run


def paired_tables(res: pd.DataFrame, run: RunDir) -> None:
    """tables/mcnemar_{loose,good}.csv: each vector source against the target alone, per
    condition, paired by test prompt (exact McNemar; b01 gained, b10 lost)."""
    from workbench.stats import mcnemar_table

    for metric in ("loose", "good"):
        kw = dict(instruction_col="with_instruction", steering_col="arm", baseline="none", correct_col=metric)
        tables = [
            mcnemar_table(res[res["arm"].isin(["none", arm])], pair_col="row_id", **kw).assign(arm=arm) for arm in ARMS
        ]
        pd.concat(tables).to_csv(run.file("tables", f"mcnemar_{metric}.csv"), index=False)


def _test_job(
    row: IFEvalRow, with_instruction: bool, arm: str, cand: Candidate, vectors: dict[str, dict[str, wb.SteeringVector]]
) -> Job:
    """A test prompt under `arm`'s chosen candidate (candidate_job's tags). The id hashes prompt
    and steering: an arm whose search chose no steering shares the generation of the target alone."""
    job = candidate_job("test", arm, row, with_instruction, cand, vectors.get(arm, {}), cross_model=arm == "source")
    return replace(job, id=job_id("test", arm, job.prompt, job.steering))
