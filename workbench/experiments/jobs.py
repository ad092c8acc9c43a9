"""The machinery every experiment shares: vectors per instruction, generation jobs that resume,
and scoring (choosing the steering from the scores: experiments/search.py).

A job is one prompt with one steering configuration. Jobs from every condition and candidate
layer run together as per-row-steered batches, in this process or on Ray workers (executor=);
each finished batch is appended to the run's generations.jsonl, so re-running skips what is done.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

import workbench as wb
from workbench.data import IFEvalRow
from workbench.experiments.rundir import RunDir
from workbench.pairs import PromptPair
from workbench.prompts import encode
from workbench.runs import batched
from workbench.steering import Steering
from workbench.vectors import VectorFileError

if TYPE_CHECKING:
    from tqdm.auto import tqdm

    from workbench.executor import Executor
    from workbench.types import Model

KeyT = TypeVar("KeyT", bound=Hashable)


@dataclass(frozen=True)
class Job:
    """One generation: `prompt` (plain text) under `steering`, scored against `row`."""

    id: str
    prompt: str
    row: IFEvalRow
    steering: tuple[Steering, ...] = ()
    tags: dict[str, Any] = field(default_factory=dict, hash=False)


def vectors_for(
    run: RunDir, model: Model, name: str, pairs: Sequence[PromptPair], *, batch_size: int = 16
) -> wb.SteeringVector:
    """Derive (or, when resuming, reload) the vector named `name` from `pairs`, all layers.
    A saved vector is never deleted: one of another model is an error, and an unreadable file
    (cut short by a kill) is moved aside to `<file>.corrupt` and derived again."""
    return vectors_for_all(run, model, {name: (name, pairs)}, batch_size=batch_size)[name]


def vectors_for_all(
    run: RunDir,
    model: Model,
    wanted: Mapping[KeyT, tuple[str, Sequence[PromptPair]]],
    *,
    batch_size: int = 16,
    executor: Executor | None = None,
) -> dict[KeyT, wb.SteeringVector]:
    """`vectors_for` for many: {key: (name, pairs)} -> {key: vector}. The vectors not saved yet
    are derived by the executor (each caches its pairs: on Ray workers, several at once) and
    saved here as each arrives, so an interrupted phase resumes from the saved ones."""
    from workbench.executor import LOCAL

    executor = executor or LOCAL
    out: dict[KeyT, wb.SteeringVector] = {}
    todo: dict[str, tuple[Sequence[PromptPair], list[KeyT]]] = {}
    for key, (name, pairs) in wanted.items():
        vec = _saved_vector(run, model, name)
        if vec is None:
            todo.setdefault(name, (pairs, []))[1].append(key)
        else:
            out[key] = vec
    start = time.perf_counter()
    work = functools.partial(derive_vector, batch_size=batch_size)
    for name, vec in executor.imap(model, work, [(name, pairs) for name, (pairs, _) in todo.items()]):
        vec.save(_vector_path(run, name))
        out.update((key, vec) for key in todo[name][1])
    if todo:
        run.timing("vectors", time.perf_counter() - start)
        run.state.setdefault("executors", {})["vectors"] = executor.describe()
        run.save()
    return {key: out[key] for key in wanted}


def derive_vector(
    model: Model, task: tuple[str, Sequence[PromptPair]], *, batch_size: int
) -> tuple[str, wb.SteeringVector]:
    """(name, pairs) -> (name, the vector derived from the pairs' cached activations), run by
    the executor."""
    name, pairs = task
    acts = wb.cache_pairs(model, pairs, batch_size=batch_size, show_progress=False)
    return name, wb.derive(acts, instruction_id=name)


def _vector_path(run: RunDir, name: str) -> Path:
    return run.path / "vectors" / f"{name.replace(':', '__')}.safetensors"


def _saved_vector(run: RunDir, model: Model, name: str) -> wb.SteeringVector | None:
    path = _vector_path(run, name)
    if not path.exists():
        return None
    try:
        return wb.SteeringVector.load(path, model=model)
    except VectorFileError:
        path.replace(path.with_name(path.name + ".corrupt"))
        return None
    except ValueError as err:
        raise ValueError(
            f"{path} holds a vector that does not fit this model: {err}. A resume "
            f"never replaces saved vectors. Fix: pass another --out for this "
            f"model (or move {run.path} away)"
        ) from err


def run_jobs(
    run: RunDir,
    model: Model,
    jobs: Sequence[Job],
    *,
    phase: str,
    max_new_tokens: int,
    batch_size: int,
    sampling: wb.Sampling = wb.Sampling(),
    stop: Sequence[str] | None = None,
    truncate: bool = False,
    executor: Executor | None = None,
    show_progress: bool | None = None,
) -> pd.DataFrame:
    """Generate every job not yet in the run; returns all of `jobs`' generations as a table.
    `truncate`: cut the start of prompts too long for the context (the count is recorded).
    `executor`: where the batches run (workbench.executor: this process by default, or Ray
    workers); each finished batch is appended to generations.jsonl here, as it arrives."""
    from workbench.executor import LOCAL

    executor = executor or LOCAL
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        raise ValueError("job ids must be unique within a run")
    done = run.generations()
    todo = [j for j in jobs if j.id not in done]
    start = time.perf_counter()
    batches = job_batches(model, todo, batch_size)
    work = functools.partial(
        generate_records,
        phase=phase,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        sampling=sampling,
        stop=stop,
        truncate=truncate,
    )
    show = show_progress is not False and len(batches) > 1
    bar = _bar(len(batches), f"{phase} ({len(todo)} to go)") if show else None
    for records in executor.imap(model, work, batches):
        run.append_generations(records)
        done.update((r["job"], r) for r in records)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    if todo:
        run.timing(phase, time.perf_counter() - start)
        run.state.setdefault("executors", {})[phase] = executor.describe()  # provenance, not a choice
        run.save()
    return pd.DataFrame([done[i] for i in ids])


def same_text(job: Job) -> tuple[str, ...]:
    """Jobs with equal keys generate the same text (same prompt, same steering)."""
    return (job.prompt, *(s.describe() for s in job.steering))


def generate_shared(jobs: Sequence[Job], generate: Callable[[list[Job]], pd.DataFrame]) -> pd.DataFrame:
    """Generate each distinct (prompt, steering) of `jobs` once, with `generate` (e.g. run_jobs
    over the first job of each), and return one line per job: that generation under the job's own
    id, key and tags, so each is scored against its own row. The request without its instruction,
    unsteered, is the same text for every instruction of a search."""
    first: dict[tuple[str, ...], Job] = {}
    for job in jobs:
        first.setdefault(same_text(job), job)
    made = {same_text(j): g for j, g in zip(first.values(), generate(list(first.values())).to_dict("records"))}
    return pd.DataFrame([{**made[same_text(j)], "job": j.id, "key": j.row.key, **j.tags} for j in jobs])


def job_batches(model: Model, jobs: Sequence[Job], batch_size: int) -> list[list[Job]]:
    """`jobs` in generation batches: sorted by prompt length in tokens, longest first (less
    padding, and the first batch shows the peak memory), then cut every `batch_size`. The batches
    are fixed here, before any worker sees them, so which process runs a batch, and how many
    run at once, cannot change a token."""
    if not jobs:
        return []
    fmt = wb.default_format(model)
    tok = model.tokenizer
    lengths = [len(ids) for ids in encode(tok, fmt.apply_all(tok, [j.prompt for j in jobs]), fmt)]
    order = sorted(range(len(jobs)), key=lambda i: -lengths[i])
    return [[jobs[i] for i in index] for index in batched(order, batch_size)]


def generate_records(
    model: Model,
    jobs: Sequence[Job],
    *,
    phase: str,
    max_new_tokens: int,
    batch_size: int,
    sampling: wb.Sampling,
    stop: Sequence[str] | None,
    truncate: bool,
) -> list[dict[str, Any]]:
    """One batch of jobs generated on `model`: the lines run_jobs appends to generations.jsonl
    (run by the executor, in this process or a worker)."""
    table = wb.generate_table(
        model,
        [j.prompt for j in jobs],
        [list(j.steering) for j in jobs],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        sampling=sampling,
        stop=stop,
        truncate=truncate,
        show_progress=False,
    )
    return [
        dict(
            job=j.id,
            phase=phase,
            key=j.row.key,
            **j.tags,
            prompt=j.prompt,
            response=g["response"],
            n_tokens=int(g["n_tokens"]),
            finish_reason=g["finish_reason"],
            steering=g["steering"],
            **({"truncated_tokens": int(g["truncated_tokens"])} if g["truncated_tokens"] else {}),
        )
        for j, g in zip(jobs, table.to_dict("records"), strict=True)
    ]


def _bar(total: int, desc: str) -> tqdm[Any]:
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False)


def score_jobs(jobs: Sequence[Job], generations: pd.DataFrame) -> pd.DataFrame:
    """Generations with IFEval verdicts (strict, loose) per job; one line per job, all
    instructions of the row followed."""
    from workbench.scoring import score_ifeval

    by_id = {j.id: j for j in jobs}
    rows = [by_id[i].row for i in generations["job"]]
    scores = score_ifeval(rows, generations["response"].tolist())
    verdict = scores.groupby("prompt_index")[["strict", "loose"]].all()
    return generations.assign(strict=verdict["strict"].to_numpy(), loose=verdict["loose"].to_numpy())


def add_fluency(model: Model, scored: pd.DataFrame, *, with_perplexity: bool = True) -> pd.DataFrame:
    """Perplexity of each response alone under the unsteered model (when `with_perplexity`),
    repetition measures, and the degeneration verdict (workbench.fluency.is_degenerate).
    The verdict is judged by repetition alone, in searches and test sets alike: the paper's
    perplexity floor (2.5) is calibrated for GPT-2 reading another model's text, and flags
    fluent lists and code when the model scores its own greedy output. Perplexity is reported
    beside it."""
    from workbench.fluency import fluency_table, perplexity

    texts = scored["response"].tolist()
    ppl = perplexity(model, texts) if with_perplexity else None
    table = fluency_table(texts, ppl, min_ppl=0.0)
    return pd.concat([scored.reset_index(drop=True), table.reset_index(drop=True)], axis=1)
