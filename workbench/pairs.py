"""Prompt pairs: the same request with and without an instruction.

    pairs = wb.make_pairs(rows)                       # rows that carry prompt_without_instruction
    split = wb.split_queries(wb.base_queries(), exclude=wb.format_test_rows(), seed=0)
    train = wb.instruction_pairs(split.train, "change_case:english_lowercase", seed=0)

Instruction sentences come from the IFEval instruction registry (if-verifiable's
`build_description`), which draws kwargs at random (seeded here), plus a few alternative
phrasings of the kwarg-free instructions, so a vector is not the direction of one sentence.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

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


@dataclass(frozen=True)
class PromptPair:
    """One request with and without an instruction (plain text, not yet chat-formatted)."""

    key: str
    with_instruction: str
    without_instruction: str
    instruction_id: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class QuerySplit:
    """Base queries split into training and validation, none of them from the evaluation set."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    excluded: int
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def make_pairs(rows: Iterable[IFEvalRow]) -> list[PromptPair]:
    """Pairs from rows that carry both sides (`prompt`, `prompt_without_instruction`)."""
    pairs = []
    for row in rows:
        if row.prompt_without_instruction is None:
            raise ValueError(
                f"row {row.key!r} has no 'prompt_without_instruction'. Fix: add the field to the "
                f"file, join it with wb.data.join_without_instruction, or build pairs from base "
                f"queries with wb.instruction_pairs")
        first = row.instruction_id_list[0] if row.instruction_id_list else None
        pairs.append(PromptPair(row.key, row.prompt, row.prompt_without_instruction, first,
                                dict(row.kwargs[0]) if row.kwargs else {}))
    if not pairs:
        raise ValueError("no rows given, so no pairs. Fix: pass at least one row.")
    return pairs


def base_queries(path=None) -> list[str]:
    """The requests of IFEval with their instructions removed (`model_output` of the paper's
    ifeval_wo_instructions.jsonl), unique, in file order."""
    rows = load_ifeval(path or data_path("ifeval_wo_instructions.jsonl"), check_ids=False)
    return list(dict.fromkeys(r.prompt_without_instruction or r.prompt for r in rows))


def split_queries(queries: Sequence[str], *, exclude: Iterable[IFEvalRow | str] = (),
                  validation: int | float = 0.1, seed: int = 0) -> QuerySplit:
    """Shuffle `queries` by `seed` into train / validation, after removing every query that is
    the base request of an evaluation prompt (the paper's code let them overlap)."""
    banned = {_norm(e.prompt_without_instruction or e.prompt if isinstance(e, IFEvalRow) else e)
              for e in exclude}
    kept = [q for q in dict.fromkeys(queries) if _norm(q) not in banned]
    if not kept:
        raise ValueError("no base query is left after excluding the evaluation prompts. "
                         "Fix: pass more queries or a smaller exclusion set.")
    random.Random(seed).shuffle(kept)
    n_val = validation if isinstance(validation, int) else round(validation * len(kept))
    return QuerySplit(tuple(kept[n_val:]), tuple(kept[:n_val]), len(set(queries)) - len(kept), seed)


def instruction_pairs(queries: Sequence[str], instruction_id: str, *,
                      kwargs: dict[str, Any] | None = None, n: int | None = None,
                      seed: int = 0, phrasings: bool = True) -> list[PromptPair]:
    """Each base query with an instruction sentence appended, and without it.

    kwargs: fixed verifier arguments (e.g. {"language": "de"}); by default drawn by the registry.
    """
    from if_verifiable.ifeval import INSTRUCTION_DICT

    check_instruction_id(instruction_id)
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
            pairs.append(PromptPair(f"{instruction_id}/{i}", f"{query.rstrip()} {sentence}",
                                    query, instruction_id, used))
    finally:
        random.setstate(state)
    return pairs


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()
