"""The paper's format experiment (Stolfo et al., section 4), as one call.

    from workbench.experiments.format import FormatConfig, run_format
    run = run_format(FormatConfig(limit=20), out="runs/format")       # or: workbench reproduce format

1. A vector per format instruction (per language for language:response_language) from training
   pairs on base queries that exclude every evaluation prompt's base query.
2. Layer search on validation prompts, separately with and without the instruction in the
   prompt: layers n_layers//5 .. last in steps of 2, plus no steering, loose accuracy, layers
   with degenerate outputs dropped.
3. The test prompts in four conditions: no instruction, + steering, instruction, + steering
   (`adjust` mode, weight 1: every position's projection set to z-bar).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

import workbench as wb
from workbench.data import FORMAT_INSTRUCTIONS, IFEvalRow, rows_hash
from workbench.experiments.jobs import Job, add_fluency, choose_layer, run_jobs, score_jobs, vectors_for
from workbench.experiments.rundir import RunDir
from workbench.pairs import PromptPair

LANGUAGE = "language:response_language"
NONE = -1  # the "no steering" candidate


@dataclass(frozen=True)
class FormatConfig:
    model: str = "smollm2-135m-instruct"
    data: str | None = None  # test file (IFEval JSONL); None: the 163 packaged format prompts
    without_data: str | None = None  # file with the requests without instructions, joined by key
    limit: int | None = None  # first N test prompts, taken round-robin over instructions
    n_pairs: int = 32  # training pairs per vector
    n_validation: int = 6  # validation prompts per instruction (the paper: 6-10)
    layer_step: int = 2
    layers: tuple[int, ...] | None = None  # candidate layers; None: n_layers//5 .. last, step
    mode: str = "adjust"
    weight: float = 1.0
    max_new_tokens: int = 96
    batch_size: int = 64  # larger batches amortise the bridge's per-step Python overhead
    seed: int = 0

    @classmethod
    def quick(cls, **overrides) -> FormatConfig:
        """A smoke-sized run: few pairs, few prompts, few layers, short answers."""
        return replace(cls(n_pairs=8, n_validation=2, layer_step=8, max_new_tokens=32,
                           limit=13), **overrides)


def _stratified(rows: list[IFEvalRow], limit: int | None) -> list[IFEvalRow]:
    if limit is None or limit >= len(rows):
        return rows
    by_id: dict[str, list[IFEvalRow]] = {}
    for r in rows:
        by_id.setdefault(r.instruction_id_list[0], []).append(r)
    out, queues = [], list(by_id.values())
    while len(out) < limit:
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop(0))
    return out


def vector_name(row: IFEvalRow) -> str:
    iid = row.instruction_id_list[0]
    return f"{iid}/{row.kwargs[0]['language']}" if iid == LANGUAGE else iid


def _validation_rows(queries, iid, languages, n, seed) -> list[IFEvalRow]:
    if iid == LANGUAGE:  # cycle through the test set's languages
        pairs = [wb.instruction_pairs([q], iid, kwargs={"language": languages[i % len(languages)]},
                                      seed=seed + i)[0] for i, q in enumerate(queries[:n])]
    else:
        pairs = wb.instruction_pairs(queries[:n], iid, seed=seed)
    return [_as_row(p, f"val/{iid}/{i}") for i, p in enumerate(pairs)]


def _as_row(pair: PromptPair, key: str) -> IFEvalRow:
    return IFEvalRow(key, pair.with_instruction, (pair.instruction_id,), (pair.kwargs,),
                     pair.without_instruction)


def _jobs(rows, vectors, layers, cfg, phase, chosen=None) -> list[Job]:
    """Jobs for each row x condition x candidate layer (or the chosen layer per condition)."""
    jobs = []
    for row in rows:
        iid = row.instruction_id_list[0]
        for with_instruction in (False, True):
            cond = "instruction" if with_instruction else "no_instruction"
            prompt = row.prompt if with_instruction else row.prompt_without_instruction
            candidates = [NONE, *layers] if chosen is None else [NONE, chosen[(iid, with_instruction)]]
            for layer in dict.fromkeys(candidates):
                spec = () if layer == NONE else (wb.Steering(
                    vectors[vector_name(row)], layer, cfg.mode, cfg.weight),)
                tags = dict(row_id=row.row_id, instruction_id=iid, with_instruction=with_instruction,
                            layer=layer, steered=layer != NONE)
                jobs.append(Job(f"{phase}/{cond}/{layer}/{row.row_id}", prompt, row, spec, tags))
    return jobs


def run_format(cfg: FormatConfig, out: str | Path, *, model=None, show_progress: bool | None = None) -> RunDir:
    """Run (or resume) the format experiment into `out`; returns the run directory."""
    model = model or wb.load_model(cfg.model)
    test = _stratified(wb.format_test_rows(cfg.data, cfg.without_data), cfg.limit)
    if not test:
        raise ValueError("no single-instruction format prompts in the test data")
    run = RunDir.open(out, "format", cfg, model=model, data_hash=rows_hash(test))
    n_layers = model.cfg.n_layers
    layers = list(cfg.layers) if cfg.layers else list(range(n_layers // 5, n_layers, cfg.layer_step))
    split = wb.split_queries(wb.base_queries(), exclude=test, seed=cfg.seed,
                             validation=cfg.n_validation * 3)
    instructions = [i for i in FORMAT_INSTRUCTIONS if any(r.instruction_id_list[0] == i for r in test)]
    languages = sorted({r.kwargs[0]["language"] for r in test if r.instruction_id_list[0] == LANGUAGE})
    run.record("split", dict(n_train=len(split.train), n_validation=len(split.validation),
                             excluded_eval_queries=split.excluded, seed=split.seed))
    run.record("format", wb.default_format(model).to_dict())
    run.record("candidate_layers", layers)

    # 1. vectors
    vectors = {}
    for iid in instructions:
        for lang in (languages if iid == LANGUAGE else [None]):
            name = f"{iid}/{lang}" if lang else iid
            pairs = wb.instruction_pairs(split.train, iid, n=cfg.n_pairs, seed=cfg.seed,
                                         kwargs={"language": lang} if lang else None)
            vectors[name] = vectors_for(run, model, name, pairs, batch_size=cfg.batch_size)

    # 2. layer search on validation prompts, with and without the instruction
    val_rows = [r for iid in instructions
                for r in _validation_rows(list(split.validation), iid, languages, cfg.n_validation, cfg.seed)]
    val_jobs = _jobs(val_rows, vectors, layers, cfg, "validation")
    val = run_jobs(run, model, val_jobs, phase="validation", max_new_tokens=cfg.max_new_tokens,
                   batch_size=cfg.batch_size, show_progress=show_progress)
    # Degeneration in the search is judged by repetition (distinct-2, compression), which needs
    # no model: the paper's GPT-2 perplexity floor does not transfer to a model scoring its own
    # greedy output, and perplexity of ~2000 responses costs as much as a third of the search.
    val = add_fluency(model, score_jobs(val_jobs, val), with_perplexity=False)
    # every field quoted: a bare carriage return inside a response would split the row
    val.to_csv(run.file("validation_scores.csv"), index=False, quoting=csv.QUOTE_NONNUMERIC)
    sweep, choices = choose_layer(val, group=["instruction_id", "with_instruction"], none_value=NONE)
    sweep.to_csv(run.file("tables", "layer_sweep.csv"), index=False)
    choices.to_csv(run.file("tables", "layer_choices.csv"), index=False)
    run.record("layers", choices.to_dict("records"))
    chosen = {(c.instruction_id, bool(c.with_instruction)): int(c.layer) for c in choices.itertuples()}

    # 3. the test set in four conditions
    test_jobs = _jobs(test, vectors, layers, cfg, "test", chosen=chosen)
    res = run_jobs(run, model, test_jobs, phase="test", max_new_tokens=cfg.max_new_tokens,
                   batch_size=cfg.batch_size, show_progress=show_progress)
    scored = add_fluency(model, score_jobs(test_jobs, res))  # perplexity reported on the test set
    # a condition whose chosen layer is "none" reuses the unsteered generation as its steered one
    scored = _fill_unsteered(scored)
    scored.to_csv(run.file("scores.csv"), index=False, quoting=csv.QUOTE_NONNUMERIC)
    write_tables(run, scored)
    from workbench.report import write_report

    write_report(run.path)
    return run


def _fill_unsteered(scored: pd.DataFrame) -> pd.DataFrame:
    steered = scored[scored["steered"]]
    have = set(zip(steered["row_id"], steered["with_instruction"]))
    plain = scored[~scored["steered"]]
    missing = plain[[(k, w) not in have for k, w in zip(plain["row_id"], plain["with_instruction"])]]
    return pd.concat([scored, missing.assign(steered=True)], ignore_index=True)


def write_tables(run: RunDir, scored: pd.DataFrame) -> None:
    from workbench.stats import mcnemar_table, two_by_two

    for metric in ("loose", "strict"):
        kw = dict(instruction_col="with_instruction", steering_col="steered", correct_col=metric)
        two_by_two(scored, pair_col="row_id", **kw).to_csv(run.file("tables", f"two_by_two_{metric}.csv"), index=False)
        mcnemar_table(scored, pair_col="row_id", **kw).to_csv(run.file("tables", f"mcnemar_{metric}.csv"), index=False)
        two_by_two(scored, by=["instruction_id"], **kw).to_csv(
            run.file("tables", f"per_instruction_{metric}.csv"), index=False)
    if "ppl" in scored:
        (scored.groupby(["with_instruction", "steered"])
         .agg(n=("job", "size"), median_ppl=("ppl", "median"), mean_distinct_2=("distinct_2", "mean"),
              degenerate_rate=("degenerate", "mean"), mean_tokens=("n_tokens", "mean"))
         .reset_index().to_csv(run.file("tables", "fluency.csv"), index=False))
