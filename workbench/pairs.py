"""Prompt pairs: the same request with and without an instruction.

    pairs = wb.make_pairs(rows)                       # rows that carry prompt_without_instruction
    split = wb.split_queries(wb.base_queries(), exclude=wb.format_test_rows(), seed=0)
    train = wb.instruction_pairs(split.train, "change_case:english_lowercase", seed=0)

Instruction sentences come from the IFEval instruction registry (if-verifiable's
`build_description`), which draws kwargs at random (seeded here), plus a few alternative
phrasings of the kwarg-free instructions, so a vector is not the direction of one sentence.

How many phrasings an instruction has: `phrasing_table()`. The registry has one sentence per
instruction (its kwargs vary where it has any); PHRASINGS adds one or two for six kwarg-free
format instructions, so those have 2-3 phrasings and every other instruction 1.
`split_phrasings` holds some out, so that "held-out" can mean unseen phrasings too:

    ph = wb.pairs.split_phrasings("detectable_format:title", held_out=1, seed=0)
    train = wb.instruction_pairs(split.train, "detectable_format:title", phrasings=ph.train)
    test = wb.instruction_pairs(split.validation, "detectable_format:title", phrasings=ph.held_out)

Control pairs append a neutral sentence (no instruction) instead: `control_pairs(queries, n=32)`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.data import IFEvalRow, check_instruction_id, data_path, load_ifeval

# Extra phrasings, used alongside the registry's own sentence; the verifier kwargs stay the same.
PHRASINGS = {
    "change_case:english_lowercase": [
        "Please write your whole answer in lowercase letters only.",
        "Use only lowercase letters in your response; do not use any capital letters.",
    ],
    "change_case:english_capital": [
        "Write your whole answer in English using only capital letters.",
        "Respond entirely in uppercase letters.",
    ],
    "detectable_format:json_format": ["Format your entire answer as valid JSON."],
    "detectable_format:title": ["Give your answer a title wrapped in double angular brackets, like <<my title>>."],
    "punctuation:no_comma": ["Do not use any commas in your answer."],
    "startend:quotation": ["Put your whole response inside double quotation marks."],
}

# Neutral sentences for control pairs: appended like an instruction, but asking for nothing a
# verifier could check (no format, length, language or wording constraint).
NEUTRAL_SENTENCES = (
    "Thank you in advance.",
    "I appreciate your help with this.",
    "I have been wondering about this for a while.",
    "This came up in a conversation with a friend.",
    "I am asking out of curiosity.",
    "Any help is welcome.",
    "I look forward to your answer.",
    "It is for a project I am working on.",
    "I hope this question makes sense.",
    "Thanks for taking the time.",
    "A friend of mine asked me about this.",
    "I would be glad to hear your thoughts.",
)
CONTROL_ID = "control:neutral"


@dataclass(frozen=True)
class PromptPair:
    """One request with and without an instruction (plain text, not yet chat-formatted)."""

    key: str
    with_instruction: str
    without_instruction: str
    instruction_id: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QuerySplit:
    """Base queries split into training and validation, none of them from the evaluation set."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    excluded: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_pairs(rows: Iterable[IFEvalRow]) -> list[PromptPair]:
    """Pairs from rows that carry both sides (`prompt`, `prompt_without_instruction`)."""
    pairs = []
    for row in rows:
        if row.prompt_without_instruction is None:
            raise ValueError(
                f"row {row.key!r} has no 'prompt_without_instruction'. Fix: add the field to the "
                f"file, join it with wb.data.join_without_instruction, or build pairs from base "
                f"queries with wb.instruction_pairs"
            )
        first = row.instruction_id_list[0] if row.instruction_id_list else None
        pairs.append(
            PromptPair(
                row.key, row.prompt, row.prompt_without_instruction, first, dict(row.kwargs[0]) if row.kwargs else {}
            )
        )
    if not pairs:
        raise ValueError("no rows given, so no pairs. Fix: pass at least one row.")
    return pairs


def base_queries(path: str | Path | None = None) -> list[str]:
    """The requests of IFEval with their instructions removed (`model_output` of the paper's
    ifeval_wo_instructions.jsonl), unique, in file order."""
    rows = load_ifeval(path or data_path("ifeval_wo_instructions.jsonl"), check_ids=False)
    return list(dict.fromkeys(r.prompt_without_instruction or r.prompt for r in rows))


def split_queries(
    queries: Sequence[str], *, exclude: Iterable[IFEvalRow | str] = (), validation: float = 0.1, seed: int = 0
) -> QuerySplit:
    """Shuffle `queries` by `seed` into train / validation, after removing every query that is
    the base request of an evaluation prompt (the paper's code let them overlap)."""
    banned = {_norm(e.prompt_without_instruction or e.prompt if isinstance(e, IFEvalRow) else e) for e in exclude}
    kept = [q for q in dict.fromkeys(queries) if _norm(q) not in banned]
    if not kept:
        raise ValueError(
            "no base query is left after excluding the evaluation prompts. "
            "Fix: pass more queries or a smaller exclusion set."
        )
    random.Random(seed).shuffle(kept)
    n_val = validation if isinstance(validation, int) else round(validation * len(kept))
    return QuerySplit(tuple(kept[n_val:]), tuple(kept[:n_val]), len(set(queries)) - len(kept), seed)


def instruction_pairs(
    queries: Sequence[str],
    instruction_id: str,
    *,
    kwargs: dict[str, Any] | None = None,
    n: int | None = None,
    seed: int = 0,
    phrasings: bool | Sequence[str] = True,
) -> list[PromptPair]:
    """Each base query with an instruction sentence appended, and without it.

    kwargs: fixed verifier arguments (e.g. {"language": "de"}); by default drawn by the registry.
    phrasings: True draws each sentence from the registry's and PHRASINGS' (kwarg-free
    instructions), False uses the registry's alone; a list of sentences (e.g.
    `split_phrasings(...).train`) draws from those only (kwarg-free instructions only).
    """
    check_instruction_id(instruction_id)
    if not isinstance(phrasings, bool):  # sentences of one's choice: for kwarg-free instructions only
        if _has_kwargs(instruction_id):
            raise ValueError(
                f"{instruction_id!r} takes verifier arguments, so its sentence is built from "
                f"them and cannot be chosen from a list. Fix: pass phrasings=True"
            )
        if not phrasings or not queries:
            raise ValueError("no phrasings or no base queries given. Fix: pass at least one of each")
        return _sentence_pairs(queries, phrasings, instruction_id, n=n, seed=seed)
    from if_verifiable.ifeval import INSTRUCTION_DICT

    if not queries:
        raise ValueError("no base queries given. Fix: pass at least one query.")
    rng = random.Random(seed)
    chosen = list(queries) if n is None else rng.sample(list(queries), min(n, len(queries)))
    checker = INSTRUCTION_DICT[instruction_id](instruction_id)
    state = random.getstate()  # the registry draws kwargs from the global `random`
    pairs = []
    try:
        for i, query in enumerate(chosen):
            random.seed(seed * 100_003 + i)
            sentence = checker.build_description(**(kwargs or {}))
            used = dict(checker.get_instruction_args() or {})
            extra = PHRASINGS.get(instruction_id, []) if phrasings and not used else []
            sentence = rng.choice([sentence, *extra])
            pairs.append(
                PromptPair(f"{instruction_id}/{i}", f"{query.rstrip()} {sentence}", query, instruction_id, used)
            )
    finally:
        random.setstate(state)
    return pairs


def _sentence_pairs(
    queries: Sequence[str], sentences: Sequence[str], instruction_id: str, *, n: int | None, seed: int
) -> list[PromptPair]:
    """`n` of `queries` (drawn by `seed`; all when n is None), each with one of `sentences`
    appended (drawn by the same generator), and without it."""
    rng = random.Random(seed)
    chosen = list(queries) if n is None else rng.sample(list(queries), min(n, len(queries)))
    return [
        PromptPair(f"{instruction_id}/{i}", f"{q.rstrip()} {rng.choice(list(sentences))}", q, instruction_id, {})
        for i, q in enumerate(chosen)
    ]


@dataclass(frozen=True)
class PhrasingSplit:
    """An instruction's phrasings split in two: derive on `train`, evaluate on `held_out`."""

    instruction_id: str
    train: tuple[str, ...]
    held_out: tuple[str, ...]
    seed: int


def phrasings(instruction_id: str) -> list[str]:
    """Every phrasing `instruction_pairs` can draw for a kwarg-free instruction: the registry's
    sentence first, then PHRASINGS'. An instruction with verifier arguments has one template
    (its sentence varies with the arguments): its registry sentence with drawn arguments."""
    from if_verifiable.ifeval import INSTRUCTION_DICT

    check_instruction_id(instruction_id)
    state = random.getstate()
    try:
        random.seed(0)
        checker = INSTRUCTION_DICT[instruction_id](instruction_id)
        try:
            first = checker.build_description()
        except ValueError:  # a sentence built around the request itself (combination:repeat_prompt)
            keys = checker.get_instruction_args_keys()
            first = checker.build_description(**{k: "{" + k + "}" for k in keys})
    finally:
        random.setstate(state)
    return [first] if _has_kwargs(instruction_id) else [first, *PHRASINGS.get(instruction_id, [])]


def phrasing_table(instruction_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """How many phrasings each instruction has: columns `instruction_id, n_phrasings, has_kwargs,
    phrasings` (default: every IFEval instruction id)."""
    from workbench.data import known_instruction_ids

    ids = sorted(known_instruction_ids()) if instruction_ids is None else list(instruction_ids)
    rows = []
    for iid in ids:
        texts = phrasings(iid)
        rows.append(dict(instruction_id=iid, n_phrasings=len(texts), has_kwargs=_has_kwargs(iid), phrasings=texts))
    return pd.DataFrame(rows)


def split_phrasings(instruction_id: str, held_out: int | Sequence[str] = 1, seed: int = 0) -> PhrasingSplit:
    """Hold phrasings out: `held_out` of them (a count, drawn by `seed`, or the sentences
    themselves) go to `held_out`, the rest to `train`. Needs at least two phrasings."""
    texts = phrasings(instruction_id)
    if len(texts) < 2:
        raise ValueError(
            f"{instruction_id!r} has {len(texts)} phrasing, so none can be held out "
            f"(phrasing_table() lists the counts). Fix: hold out queries instead, or "
            f"add phrasings to workbench.pairs.PHRASINGS"
        )
    if isinstance(held_out, int):
        if not 1 <= held_out < len(texts):
            raise ValueError(f"held_out must be in 1..{len(texts) - 1} for {instruction_id!r}, got {held_out}")
        order = list(texts)
        random.Random(seed).shuffle(order)
        out = order[:held_out]
    else:
        out = list(held_out)
        unknown = [t for t in out if t not in texts]
        if unknown or not out or len(out) == len(texts):
            raise ValueError(f"held_out must be some but not all of phrasings({instruction_id!r}); unknown: {unknown}")
    return PhrasingSplit(
        instruction_id, tuple(t for t in texts if t not in out), tuple(t for t in texts if t in out), seed
    )


def control_pairs(
    queries: Sequence[str], n: int | None = None, seed: int = 0, sentences: Sequence[str] = NEUTRAL_SENTENCES
) -> list[PromptPair]:
    """Control pairs: each base query with a neutral sentence appended (drawn by `seed` from
    `sentences`; none asks for anything), and without it. Their vector is what appending a
    sentence does by itself; an instruction vector's part beyond it is the instruction's.
    `instruction_id` is "control:neutral" (no verifier: do not score these)."""
    if not queries:
        raise ValueError("no base queries given. Fix: pass at least one query.")
    if not sentences:
        raise ValueError("no neutral sentences given")
    return _sentence_pairs(queries, sentences, CONTROL_ID, n=n, seed=seed)


def _has_kwargs(instruction_id: str) -> bool:
    from if_verifiable.ifeval import INSTRUCTION_DICT

    return bool(INSTRUCTION_DICT[instruction_id](instruction_id).get_instruction_args_keys())


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()
