"""The paper's length experiment (Stolfo et al., section 5.1), as one call.

    from workbench.experiments.length import LengthConfig, run_length
    run = run_length(LengthConfig(limit=10), out="runs/length")       # or: workbench reproduce length

1. Length vectors. Each training base query is paired with a length phrasing of one of five
   classes, from "extremely concise" to "extremely verbose" (PHRASINGS); the vector of a class is
   the mean over pairs of (query + phrasing) - (query), the paper's construction. The
   conciseness vector is the "extremely concise" class, the verbosity vector the "extremely
   verbose" one. With `baseline="opposite"` the conciseness vector contrasts the extremes instead:
   (query + extremely concise) - (query + extremely verbose), and the verbosity vector the reverse.
2. Evaluation queries (disjoint from the training ones) x "Answer using at most n sentences."
   (n = 1..max_sentences), with and without the instruction in the prompt, steered with `add`
   of the conciseness vector at one layer over a weight grid (weight 0 = no steering).
   Scored by IFEval's length_constraints:number_sentences (relation "less than", n + 1: "at
   most n"), loose and strict, and by the sentence count of its own tokenizer (count_sentences).

Weights: the paper's c (20 at layer 12 for Phi-3) is in units of Phi-3's residual stream, whose
norm differs from a small model's. With weight_unit="norm_percent" (the default) c is a percent
of the mean residual norm at the steering layer (last prompt token of plain queries), so the
grid means the same push on any model; "raw" uses c as given. The tables carry both.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

import workbench as wb
from workbench.data import IFEvalRow, rows_hash
from workbench.executor import Executor
from workbench.experiments.checks import check_out, check_prompts_fit, row_prompts
from workbench.experiments.grid import (
    NONE,
    Settings,
    accuracy_table,
    depth_layer,
    grid_jobs,
    raw_weight,
    residual_norms,
    run_grid,
    save_scores,
)
from workbench.experiments.jobs import vectors_for_all
from workbench.experiments.rows import short_base_queries
from workbench.experiments.rundir import RunDir
from workbench.models import load_args
from workbench.pairs import PromptPair
from workbench.types import Model

SENTENCES = "length_constraints:number_sentences"
# Five length classes, most concise first; one phrasing is drawn per training pair.
PHRASINGS = {
    "extremely_concise": [
        "Be extremely concise.",
        "Answer as briefly as you possibly can.",
        "Keep your reply extremely short.",
        "Use as few words as possible.",
        "Your answer must be extremely brief.",
    ],
    "concise": ["Be concise.", "Keep your answer short.", "Answer briefly.", "Your reply should be brief."],
    "moderate": [
        "Give an answer of moderate length.",
        "Make the answer neither too short nor too long.",
        "Aim for a medium-length reply.",
    ],
    "verbose": ["Be verbose.", "Give a long, detailed answer.", "Your reply should be long and thorough."],
    "extremely_verbose": [
        "Be extremely verbose.",
        "Give an extremely long and exhaustive answer.",
        "Make your reply as long and detailed as you possibly can.",
    ],
}
DIRECTIONS = {"concise": "extremely_concise", "verbose": "extremely_verbose"}


@dataclass(frozen=True)
class LengthConfig(Settings):
    model: str = "smollm2-135m-instruct"
    limit: int | None = 50  # evaluation base queries (the paper: 50; None: 50)
    n_pairs: int = 50  # training base queries per length class (the paper: 50)
    max_sentences: int = 5  # "at most n sentences", n = 1..max_sentences
    baseline: str = "plain"  # "plain": class vs the bare query (the paper); "opposite": extremes contrasted
    directions: tuple[str, ...] = ("concise",)  # vectors steered with ("verbose" too, to lengthen)
    all_classes: bool = True  # derive all five classes (their cosines), not only the steered ones
    layer: int | None = None  # None: the layer at relative depth `depth`
    depth: float = 0.375  # the paper's layer 12 of Phi-3's 32
    weights: tuple[float, ...] = (0, 5, 10, 20, 40)  # the grid; 0 = no steering
    weight_unit: str = "norm_percent"  # or "raw"
    max_new_tokens: int = 256
    # quick(): two short queries, the conciseness vector only, few pairs, two weights, short answers
    QUICK: ClassVar[dict[str, object]] = dict(
        limit=2, n_pairs=8, weights=(0, 20), max_new_tokens=48, all_classes=False, max_query_chars=300
    )


def sentence_instruction(n: int) -> str:
    return f"Answer using at most {n} sentence{'s' if n > 1 else ''}."


def at_most(n: int) -> dict[str, Any]:
    """IFEval kwargs for "at most n sentences" (its relations are "less than" and "at least")."""
    return {"relation": "less than", "num_sentences": n + 1}


def length_pairs(
    queries: Sequence[str], cls: str, *, n: int, seed: int, against: str | None = None
) -> list[PromptPair]:
    """(query + a phrasing of `cls`) vs (query), or vs (query + a phrasing of `against`)."""
    rng = random.Random(f"{seed}/{cls}/{against}")
    chosen = rng.sample(list(queries), min(n, len(queries)))
    pairs = []
    for i, q in enumerate(chosen):
        other = f"{q} {rng.choice(PHRASINGS[against])}" if against else q
        pairs.append(PromptPair(f"length/{cls}/{i}", f"{q} {rng.choice(PHRASINGS[cls])}", other))
    return pairs


def length_vectors(
    run: RunDir,
    model: Model,
    queries: Sequence[str],
    *,
    n_pairs: int,
    seed: int,
    baseline: str = "plain",
    classes: Sequence[str] = tuple(PHRASINGS),
    batch_size: int = 16,
    executor: Executor | None = None,
) -> dict[str, wb.SteeringVector]:
    """The vector of each length class (named length/<class>); with baseline="opposite" only the
    two extremes, each contrasted with the other."""
    if baseline not in ("plain", "opposite"):
        raise ValueError(f"unknown length baseline {baseline!r}: use 'plain' or 'opposite'")
    opposite = {"extremely_concise": "extremely_verbose", "extremely_verbose": "extremely_concise"}
    if baseline == "opposite":
        classes = [c for c in classes if c in opposite]
    wanted = {
        c: (
            f"length/{c}" + ("_vs_opposite" if baseline == "opposite" else ""),
            length_pairs(queries, c, n=n_pairs, seed=seed, against=opposite[c] if baseline == "opposite" else None),
        )
        for c in classes
    }
    return vectors_for_all(run, model, wanted, batch_size=batch_size, executor=executor)


def length_rows(
    queries: Sequence[str], max_sentences: int, instruction: Callable[[int], str] = sentence_instruction
) -> list[IFEvalRow]:
    """Every query with "at most n sentences" for n = 1..max_sentences (the verifier's kwargs)."""
    return [
        IFEvalRow(f"q{i}/n{n}", f"{q} {instruction(n)}", (SENTENCES,), (at_most(n),), q, extra=dict(query=i, max_n=n))
        for i, q in enumerate(queries)
        for n in range(1, max_sentences + 1)
    ]


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

    unknown = set(cfg.directions) - set(DIRECTIONS)
    if unknown:
        raise ValueError(f"unknown length directions {sorted(unknown)}: use {sorted(DIRECTIONS)}")
    model = model or wb.load_model(cfg.model, **load_args(cfg))
    split = wb.split_queries(short_base_queries(cfg.max_query_chars), seed=cfg.seed, validation=cfg.limit or 50)
    rows = length_rows(split.validation, cfg.max_sentences)
    check_out(out)
    check_prompts_fit(model, row_prompts(rows), max_new_tokens=cfg.max_new_tokens)
    run = RunDir.open(out, "length", cfg, model=model, data_hash=rows_hash(rows))
    layer = cfg.layer if cfg.layer is not None else depth_layer(model.cfg.n_layers, cfg.depth)
    run.record("format", wb.default_format(model).to_dict())
    run.record("layer", layer)

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
    norms = residual_norms(run, model, split.train[:16], [layer], batch_size=cfg.batch_size)
    steer = {d: vectors[DIRECTIONS[d]] for d in cfg.directions}
    run.record(
        "weights",
        [
            dict(
                c=c, raw=raw_weight(c, layer, norms, cfg.weight_unit), unit=cfg.weight_unit, residual_norm=norms[layer]
            )
            for c in cfg.weights
        ],
    )

    def candidates(row: IFEvalRow, with_instruction: bool) -> list[tuple[str, int, float]]:
        return [(d, layer if c else NONE, c) for d in cfg.directions for c in cfg.weights]

    def specs(direction: str, row: IFEvalRow, layer: int, c: float) -> list[wb.Steering]:
        return [wb.Steering(steer[direction], layer, "add", raw_weight(c, layer, norms, cfg.weight_unit))]

    jobs = grid_jobs(rows, "test", candidates, specs, tags=lambda r: dict(r.extra))
    scored = run_grid(run, model, jobs, cfg, phase="test", executor=executor, show_progress=show_progress)
    scored["n_sentences"] = [count_sentences(t) for t in scored["response"]]
    scored["at_most_n"] = (scored["n_sentences"] <= scored["max_n"]) & scored["response"].str.strip().astype(bool)
    scored["n_words"] = [len(t.split()) for t in scored["response"]]
    # a loop cut at max_new_tokens can pass "at most n sentences" (no sentence ever ends)
    scored["loose_not_degenerate"] = scored["loose"].astype(bool) & ~scored["degenerate"].astype(bool)
    save_scores(scored, run.file("scores.csv"))
    write_tables(run, scored, vectors, layer)
    from workbench.report import write_report

    write_report(run.path)
    return run


def write_tables(run: RunDir, scored: pd.DataFrame, vectors: dict[str, wb.SteeringVector], layer: int) -> None:
    """Accuracy (loose, and by sentence count) per weight and per n, with intervals over base
    queries, and the cosines between the length classes' vectors at the steering layer."""
    means = ("loose_not_degenerate", "n_sentences", "n_words", "n_tokens")
    # a weight-0 line counts once per direction (its generation is shared). The lines of one base
    # query are correlated (without the instruction they are one response scored at every n), so
    # intervals resample queries
    for by, name in (
        (["arm", "with_instruction", "weight"], "by_weight"),
        (["arm", "with_instruction", "weight", "max_n"], "by_n"),
    ):
        for metric in ("loose", "at_most_n"):
            accuracy_table(scored, by, metric=metric, means=means, cluster="query").to_csv(
                run.file("tables", f"{name}_{metric}.csv"), index=False
            )
    names = list(vectors)
    units = {c: vectors[c].direction(layer) for c in names}
    cos = pd.DataFrame([dict(a=a, b=b, cosine=float(units[a] @ units[b])) for a in names for b in names])
    cos.to_csv(run.file("tables", "class_cosines.csv"), index=False)
