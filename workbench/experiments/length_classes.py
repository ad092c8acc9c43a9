"""The five length classes of the length experiment and their vectors (Stolfo et al., section
5.1): each training base query paired with a phrasing of one class, from "extremely concise" to
"extremely verbose".

    vectors = length_vectors(run, model, split.train, n_pairs=50, seed=0)   # {class: vector}
    vectors["extremely_concise"]                                           # the conciseness vector
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import workbench as wb
from workbench.experiments.jobs import vectors_for_all
from workbench.pairs import PromptPair

if TYPE_CHECKING:
    from workbench.executor import Executor
    from workbench.experiments.rundir import RunDir
    from workbench.types import Model

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
