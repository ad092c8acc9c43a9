"""One search over steering candidates (layer x mode x strength), shared by the experiments:
successive halving on validation prompts, selecting on "followed and not degenerate".

    cands = candidate_grid(layers=[6, 9, 12], adjust=(1.0,), add=(1.0,))
    choices = successive_halving(run, groups, cands, jobs_for, evaluate, name="search")
    choices[("detectable_format:title", False)]          # -> Candidate(layer=24, mode="adjust", ...)

Per output the search asks what a researcher wants: the instruction followed (IFEval loose) and
the text not degenerate (`good`). A degenerate output counts as not followed; it does not veto
its candidate, so one loop among a few prompts cannot decide. Every candidate runs on the first
few prompts of each group; the better part goes on to more prompts, and the finalists run on all
of them. No steering runs in every round (it is the bar to beat); a steered finalist is chosen
only when its `good` rate on all prompts is strictly above no steering's. Every round is
recorded in run.json (`<name>_rounds`) and in tables/<name>_rounds.csv.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from workbench.data import IFEvalRow
from workbench.experiments.jobs import Job, add_fluency, generate_shared, run_jobs, score_jobs
from workbench.experiments.rundir import RunDir
from workbench.vectors import SteeringVector

if TYPE_CHECKING:
    from workbench.executor import Executor
    from workbench.types import Model

NONE = -1  # the layer of "no steering"
MODES = ("adjust", "add", "ablate")


@dataclass(frozen=True, order=True)
class Candidate:
    """One steering setting. `strength` is adjust's / ablate's weight, or for `add` a multiple
    of the vector's raw norm at that layer (`add` at 1.0 adds the mean difference itself)."""

    layer: int = NONE
    mode: str = "none"
    strength: float = 0.0

    @property
    def steered(self) -> bool:
        return self.layer != NONE

    @property
    def label(self) -> str:
        return f"{self.mode}@L{self.layer}x{self.strength:g}" if self.steered else "none"

    def weight(self, vector: SteeringVector) -> float:
        """The Steering weight of this candidate for `vector` (a SteeringVector)."""
        if self.mode == "add":
            return float(self.strength * vector.norms[vector.layers.index(self.layer)])
        return float(self.strength)


def candidate_grid(
    layers: Sequence[int], *, adjust: Sequence[float] = (1.0,), add: Sequence[float] = (), ablate: Sequence[float] = ()
) -> list[Candidate]:
    """No steering, then every layer x (mode, strength)."""
    out = [Candidate()]
    for layer in layers:
        for mode, strengths in (("adjust", adjust), ("add", add), ("ablate", ablate)):
            out += [Candidate(int(layer), mode, float(s)) for s in strengths]
    return out


@dataclass(frozen=True)
class Halving:
    """The rounds: prompts per group at each round (cumulative), and how many steered candidates
    go on after each round but the last."""

    prompts: tuple[int, ...] = (4, 10, 24)
    keep: tuple[int, ...] = (4, 2)

    def __post_init__(self) -> None:
        if len(self.keep) != len(self.prompts) - 1 or list(self.prompts) != sorted(self.prompts):
            raise ValueError(
                f"Halving needs increasing prompts and one keep per round but the "
                f"last, got prompts={self.prompts}, keep={self.keep}"
            )


GroupT = TypeVar("GroupT", bound=Hashable)  # what a search chooses per: (instruction, condition), ...
Evaluate = Callable[[list[Job], int], pd.DataFrame]  # -> lines with job, loose, degenerate


class Evaluator:
    """The `evaluate` of a search on a run: generates each distinct (prompt, steering) of the
    jobs once (resumable: run_jobs appends to generations.jsonl), scores each job against its own
    row (IFEval loose on all of the row's instructions, degeneration by repetition: no perplexity
    in a search), and keeps every scored line (`table()`, for validation_scores.csv).

        evaluate = Evaluator(run, model, max_new_tokens=96, batch_size=64)
        chosen = successive_halving(run, groups, cands, jobs_for, evaluate)
        evaluate.table().to_csv(run.file("validation_scores.csv"), ...)
    """

    def __init__(
        self,
        run: RunDir,
        model: Model,
        *,
        max_new_tokens: int,
        batch_size: int,
        phase: str = "validation",
        truncate: bool = False,
        executor: Executor | None = None,
        show_progress: bool | None = None,
    ) -> None:
        self.run, self.model, self.phase = run, model, phase
        self.generation: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            truncate=truncate,
            executor=executor,
            show_progress=show_progress,
        )
        self.lines: dict[str, dict[Hashable, Any]] = {}  # scored lines by job id

    def generate(self, jobs: Sequence[Job]) -> pd.DataFrame:
        return run_jobs(self.run, self.model, jobs, phase=self.phase, **self.generation)

    def __call__(self, jobs: list[Job], round_: int) -> pd.DataFrame:
        todo = list({j.id: j for j in jobs if j.id not in self.lines}.values())
        if todo:
            gens = generate_shared(todo, self.generate)
            scored = add_fluency(self.model, score_jobs(todo, gens), with_perplexity=False)
            self.lines.update((r["job"], r) for r in scored.to_dict("records"))
        return pd.DataFrame([self.lines[j.id] for j in jobs])

    def table(self) -> pd.DataFrame:
        """Every line scored so far, one per job."""
        return pd.DataFrame(list(self.lines.values()))


def summarize(lines: pd.DataFrame) -> dict[str, float]:
    """n, good (followed and not degenerate), loose and degenerate rates of some scored lines."""
    good = lines["loose"].astype(bool) & ~lines["degenerate"].astype(bool)
    return dict(
        n=len(lines),
        good=float(good.mean()),
        loose=float(lines["loose"].mean()),
        degenerate=float(lines["degenerate"].mean()),
    )


def _rank(stats: dict[Candidate, dict[str, float]]) -> list[Candidate]:
    """Steered candidates best first: more good, then more followed at all (loose), then fewer
    degenerate, then grid order. Loose breaks ties because on a few prompts every candidate is
    often at good = 0: a candidate that makes the model follow the instruction while it loops
    is then closer to the goal than one that changes nothing, and a later round with more
    prompts decides between them (in the first full format run, ranking ties by degenerate rate
    kept the early layers that change nothing and dropped the late ones that title answers)."""
    steered = [c for c in stats if c.steered]
    return sorted(
        steered, key=lambda c: (-stats[c]["good"], -stats[c]["loose"], stats[c]["degenerate"], steered.index(c))
    )


def successive_halving(
    run: RunDir,
    groups: Mapping[GroupT, Sequence[IFEvalRow]],
    candidates: Sequence[Candidate],
    jobs_for: Callable[[GroupT, Sequence[IFEvalRow], Candidate], list[Job]],
    evaluate: Evaluate,
    *,
    plan: Halving = Halving(),
    name: str = "search",
    group_names: Sequence[str] = ("group",),
) -> dict[GroupT, Candidate]:
    """Choose a candidate per group; `jobs_for(group, rows, candidate)` makes the jobs of one
    candidate on some rows of a group, and `evaluate(jobs, round)` generates and scores them
    (all groups of a round at once, so they share batches). Groups that are tuples are recorded
    as the columns `group_names`. Returns {group: chosen candidate}."""
    if not candidates or candidates[0].steered:
        raise ValueError("the candidates must start with no steering (Candidate()), the baseline")
    short = {g: len(rows) for g, rows in groups.items() if len(rows) < plan.prompts[-1]}
    if short:
        raise ValueError(
            f"the search needs {plan.prompts[-1]} validation prompts per group; "
            f"these have fewer: {short}. Fix: more validation prompts, or a plan "
            f"with fewer"
        )
    alive = {g: list(candidates) for g in groups}
    records: list[dict[str, object]] = []
    choices: dict[GroupT, Candidate] = {}
    for round_, n in enumerate(plan.prompts):
        jobs_of = {(g, c): jobs_for(g, groups[g][:n], c) for g in groups for c in alive[g]}
        lines = evaluate([j for js in jobs_of.values() for j in js], round_).set_index("job")
        for g in groups:
            stats = {c: summarize(lines.loc[[j.id for j in jobs_of[(g, c)]]]) for c in alive[g]}
            last = round_ == len(plan.prompts) - 1
            ranked = _rank(stats)
            kept = ranked if last else ranked[: plan.keep[round_]]
            for c in alive[g]:
                records.append(
                    dict(
                        round=round_,
                        n_prompts=n,
                        **_named(g, group_names),
                        **asdict(c),
                        label=c.label,
                        **stats[c],
                        kept=(not c.steered) or c in kept,
                    )
                )
            if last:
                none, best = stats[candidates[0]], (ranked[0] if ranked else None)
                choices[g] = best if best is not None and stats[best]["good"] > none["good"] else candidates[0]
            else:
                alive[g] = [candidates[0], *kept]
    table = pd.DataFrame(records)
    table.to_csv(run.file("tables", f"{name}_rounds.csv"), index=False)
    run.record(
        f"{name}_plan", dict(prompts=list(plan.prompts), keep=list(plan.keep), candidates=[c.label for c in candidates])
    )
    run.record(f"{name}_rounds", records)
    return choices


def sweep_layers(
    rounds: pd.DataFrame | Sequence[Mapping[str, Any]], chosen: Mapping[GroupT, Candidate], group_names: Sequence[str]
) -> dict[GroupT, int | None]:
    """The layer each group's test sweep (a weight curve) runs at: the chosen candidate's, or,
    where the search chose no steering, its best steered finalist's (the search's own ranking
    over the last round), so the sweep still shows what steering does there; None when no
    steered candidate reached the last round. `rounds`: the search's records (run.json
    `<name>_rounds` or tables/<name>_rounds.csv)."""
    table = rounds if isinstance(rounds, pd.DataFrame) else pd.DataFrame(list(rounds))
    last = table[table["round"] == table["round"].max()]
    out: dict[GroupT, int | None] = {}
    for group, cand in chosen.items():
        mine = last
        for col, value in _named(group, group_names).items():
            mine = mine[mine[col] == value]
        stats = {
            Candidate(int(r["layer"]), str(r.get("mode", "add")), float(r.get("strength", 0.0))): dict(
                good=float(r["good"]), loose=float(r["loose"]), degenerate=float(r["degenerate"])
            )
            for r in mine.to_dict("records")
            if int(r["layer"]) != NONE
        }
        ranked = _rank(stats)
        out[group] = cand.layer if cand.steered else ranked[0].layer if ranked else None
    return out


def _named(group: Hashable, names: Sequence[str]) -> dict[str, object]:
    values = group if isinstance(group, tuple) else (group,)
    if len(values) != len(names):
        raise ValueError(f"group {group!r} does not match group_names {list(names)}")
    return dict(zip(names, values))
