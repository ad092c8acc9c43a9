"""What the experiments after format share: steering grids as jobs, one scored line per job,
`add` weights in units of the residual-stream norm, and accuracy tables with intervals. (The
search over layer x mode x strength that chooses a setting is experiments/search.py.)

    jobs = grid_jobs(rows, "test", candidates, specs)            # rows x instruction x candidates
    scored = run_grid(run, model, jobs, cfg, phase="test")       # generated once, resumable
    accuracy_table(scored, ["arm", "with_instruction", "weight"])

A candidate is (arm, layer, weight): the arm names what steers (a vector family, "none"), layer
NONE means no steering. Jobs with the same prompt and steering share one generation: the prompt
without the instruction serves every variant of its query (all n of "at most n sentences"), and
no steering serves every arm.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import pandas as pd
import torch

import workbench as wb
from workbench.data import IFEvalRow
from workbench.experiments.jobs import Job, add_fluency, run_jobs
from workbench.experiments.rows import vector_name
from workbench.experiments.rundir import RunDir
from workbench.pairs import PromptPair
from workbench.steering import Steering

if TYPE_CHECKING:
    from workbench.executor import Executor
    from workbench.types import Model

NONE = -1  # the "no steering" layer
WEIGHT_UNITS = ("norm_percent", "raw")


@dataclass(frozen=True)
class Settings:
    """The fields every experiment config after format shares (their base class). `quick()` is
    the config with the class's QUICK overrides: a smoke-sized run, minutes on SmolLM2."""

    max_query_chars: int | None = None  # drop longer base queries and test prompts (quick runs)
    max_new_tokens: int = 128
    batch_size: int = 64
    seed: int = 0
    device: str | None = None  # "cpu" (None), "cuda", "cuda:1": where the model runs, workers too
    dtype: str | None = None  # "float32" (None), "bfloat16", "float16"
    device_map: str | None = None  # "auto", "balanced", "sequential": split the model over the GPUs
    QUICK: ClassVar[dict[str, Any]] = {}  # field values of a smoke-sized run

    @classmethod
    def quick(cls, **overrides: Any) -> Self:
        return replace(cls(**cls.QUICK), **overrides)


# candidates(row, with_instruction) -> its (arm, layer, weight) candidates; layer NONE: no steering
Candidates = Callable[[IFEvalRow, bool], Iterable[tuple[str, int, float]]]
# specs(arm, row, layer, weight) -> the steering of a steered candidate
Specs = Callable[[str, IFEvalRow, int, float], Sequence[Steering]]


def save_scores(scored: pd.DataFrame, path: Path) -> None:
    """A table holding responses, every field quoted: pandas' default quoting leaves a bare
    carriage return unquoted, and read_csv would split the row there."""
    scored.to_csv(path, index=False, quoting=csv.QUOTE_ALL)


def search_layers(n_layers: int, step: int, layers: Sequence[int] | None = None) -> list[int]:
    """The paper's candidates: n_layers//5 to the last layer in steps of `step` (or `layers`)."""
    return list(layers) if layers else list(range(n_layers // 5, n_layers, step))


def depth_layer(n_layers: int, depth: float) -> int:
    """The layer at relative depth `depth` (the paper's hand-picked layer 12 of Phi-3's 32 is
    0.375), clipped to the model's layers."""
    return min(max(round(depth * n_layers), 0), n_layers - 1)


def residual_norms(
    run: RunDir, model: Model, queries: Sequence[str], layers: Sequence[int], *, batch_size: int
) -> dict[int, float]:
    """Mean norm of the residual stream after each of `layers` at the last prompt token of the
    plain `queries`: the unit of weights given in percent of the norm. Recorded in run.json (a
    resumed run reuses it)."""
    saved = run.state["choices"].get("residual_norms")
    if saved:
        return {int(layer): float(v) for layer, v in saved.items()}
    # cache_pairs reads two prompts per pair: make them two different queries
    pairs = [PromptPair(f"norm/{i}", a, b) for i, (a, b) in enumerate(zip(queries[::2], queries[1::2]))]
    acts = wb.cache_pairs(model, pairs, layers=sorted(set(layers)), batch_size=batch_size, show_progress=False)
    norms = torch.cat([acts.with_instruction, acts.without_instruction]).norm(dim=-1).mean(0)
    out = {int(layer): round(float(n), 4) for layer, n in zip(acts.layers, norms)}
    run.record("residual_norms", out)
    return out


def raw_weight(c: float, layer: int, norms: dict[int, float], unit: str) -> float:
    """An `add` weight as the hooks use it: `c` percent of the layer's mean residual norm, or `c`
    itself when unit is "raw" (the paper's c, for Phi-3's residual scale)."""
    if unit not in WEIGHT_UNITS:
        raise ValueError(f"unknown weight unit {unit!r}: use one of {WEIGHT_UNITS}")
    return float(c) if unit == "raw" else float(c) / 100.0 * norms[layer]


def job_id(phase: str, arm: str, prompt: str, steering: Sequence[Steering]) -> str:
    what = "\n".join([prompt, *(s.describe() for s in steering)])
    return f"{phase}/{arm if steering else 'none'}/{hashlib.sha256(what.encode()).hexdigest()[:20]}"


def grid_jobs(
    rows: Sequence[IFEvalRow],
    phase: str,
    candidates: Candidates,
    specs: Specs,
    *,
    tags: Callable[[IFEvalRow], dict[str, Any]] | None = None,
    conditions: Sequence[bool] = (False, True),
) -> list[Job]:
    """One job per row x instruction in the prompt (or not) x candidate; `specs(arm, row, layer,
    weight)` gives the steering of a steered candidate. Tags: row_id, arm, instruction_id,
    with_instruction, layer, weight, steered, and `tags(row)`."""
    jobs = []
    for row in rows:
        for with_instruction in conditions:
            prompt = row.prompt if with_instruction else row.prompt_without_instruction
            if prompt is None:
                raise ValueError(f"row {row.key!r} has no prompt without its instruction; pass conditions=(True,)")
            for arm, layer, weight in candidates(row, with_instruction):
                steering = () if layer == NONE else tuple(specs(arm, row, layer, weight))
                info = dict(
                    row_id=row.row_id,
                    arm=arm,
                    instruction_id=row.instruction_id_list[0],
                    with_instruction=with_instruction,
                    layer=int(layer),
                    weight=float(weight),
                    steered=bool(steering),
                    **(tags(row) if tags else {}),
                )
                jobs.append(Job(job_id(phase, arm, prompt, steering), prompt, row, steering, info))
    return jobs


def run_grid(
    run: RunDir,
    model: Model,
    jobs: Sequence[Job],
    cfg: Settings,
    *,
    phase: str,
    perplexity: bool = True,
    executor: Executor | None = None,
    show_progress: bool | None = None,
) -> pd.DataFrame:
    """Generate each distinct job once (resumable), then one line per job of `jobs`: its tags,
    the response, IFEval strict/loose (all of the row's instructions) and fluency. Searches pass
    perplexity=False, as the format experiment does: degeneration is then judged by repetition
    alone (the 2.5 perplexity floor is calibrated for GPT-2, not for the model scoring itself)."""
    from workbench.scoring import score_ifeval

    unique = list({j.id: j for j in jobs}.values())
    gens = run_jobs(
        run,
        model,
        unique,
        phase=phase,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        executor=executor,
        show_progress=show_progress,
    )
    fluency = add_fluency(model, gens[["job", "response"]], with_perplexity=perplexity)
    fluency = fluency.drop(columns="response").set_index("job")
    by_id = gens.set_index("job")[["response", "n_tokens", "finish_reason"]]
    lines = pd.DataFrame([dict(job=j.id, key=j.row.key, prompt=j.prompt, **j.tags) for j in jobs])
    lines = lines.join(by_id, on="job").join(fluency, on="job")
    verdicts = score_ifeval([j.row for j in jobs], lines["response"].tolist())
    every = verdicts.groupby("prompt_index")[["strict", "loose"]].all()
    return lines.assign(strict=every["strict"].to_numpy(), loose=every["loose"].to_numpy())


def instruction_verdicts(jobs: Sequence[Job], scored: pd.DataFrame, metric: str = "loose") -> pd.DataFrame:
    """One column per instruction id: whether line i of `scored` (job i) followed it (NaN where
    the row does not carry that instruction)."""
    from workbench.scoring import score_ifeval

    verdicts = score_ifeval([j.row for j in jobs], scored["response"].tolist())
    wide = verdicts.pivot_table(index="prompt_index", columns="instruction_id", values=metric, aggfunc="all")
    return wide.reindex(range(len(jobs))).reset_index(drop=True)


def accuracy_table(
    scored: pd.DataFrame,
    by: Sequence[str],
    *,
    metric: str = "loose",
    means: Sequence[str] = (),
    cluster: str | None = None,
) -> pd.DataFrame:
    """Per group: n, accuracy of `metric` with a 95% interval (ci_low, ci_high), the mean of each
    of `means`, the median response perplexity and the share of degenerate responses. The
    interval is Wilson's over the lines, or, when lines come in correlated clusters (the column
    `cluster`, e.g. one base query scored at several n), a bootstrap over clusters, with
    n_clusters beside n."""
    from workbench.stats import accuracy_ci, clustered_accuracy_ci

    lines = []
    for key, g in scored.groupby(list(by), sort=True):
        values = key if isinstance(key, tuple) else (key,)
        k, n = int(g[metric].astype(bool).sum()), len(g)
        low, high = clustered_accuracy_ci(g[metric].astype(bool), g[cluster]) if cluster else accuracy_ci(k, n)
        extra = dict(n_clusters=int(g[cluster].nunique())) if cluster else {}
        lines.append(
            dict(
                zip(by, values),
                n=n,
                **extra,
                accuracy=k / n,
                ci_low=low,
                ci_high=high,
                **{m: float(g[m].mean()) for m in means},
                ppl_median=float(g["ppl"].median()),
                degenerate=float(g["degenerate"].mean()),
            )
        )
    return pd.DataFrame(lines)


def vector_specs(
    vectors: dict[str, dict[str, wb.SteeringVector]], mode: str, *, cross_model: Sequence[str] = ()
) -> Specs:
    """Specs of arms that steer each row with its own instruction's vector
    (`vectors[arm][rows.vector_name(row)]`); arms in `cross_model` carry another model's vectors."""

    def specs(arm: str, row: IFEvalRow, layer: int, weight: float) -> list[Steering]:
        return [wb.Steering(vectors[arm][vector_name(row)], layer, mode, weight, allow_cross_model=arm in cross_model)]

    return specs
