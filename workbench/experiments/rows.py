"""The rows the experiments draw: test rows taken round-robin over instructions, validation rows
built from base queries, and the training pairs of one vector per format instruction (one per
language for the language instruction).

In a notebook:

    test = stratified_rows(wb.format_test_rows(), limit=20)
    val = validation_rows(split.validation, "detectable_format:title", languages, n=24, seed=0)
    pairs = format_vector_pairs(split.train, instructions, languages, n=32, seed=0)   # name -> pairs
"""

from __future__ import annotations

from collections.abc import Sequence

import workbench as wb
from workbench.data import IFEvalRow
from workbench.pairs import PromptPair

LANGUAGE = "language:response_language"  # the instruction whose vectors are one per language


def short_base_queries(max_chars: int | None = None) -> list[str]:
    """wb.base_queries(), without those longer than `max_chars` (quick runs, small contexts)."""
    return [q for q in wb.base_queries() if max_chars is None or len(q) <= max_chars]


def short_rows(rows: Sequence[IFEvalRow], max_chars: int | None) -> list[IFEvalRow]:
    """`rows` without those whose prompt is longer than `max_chars`."""
    return [r for r in rows if max_chars is None or len(r.prompt) <= max_chars]


def stratified_rows(rows: list[IFEvalRow], limit: int | None) -> list[IFEvalRow]:
    """The first `limit` rows taken round-robin over their (first) instructions."""
    if limit is None or limit >= len(rows):
        return rows
    by_id: dict[str, list[IFEvalRow]] = {}
    for r in rows:
        by_id.setdefault(r.instruction_id_list[0], []).append(r)
    out: list[IFEvalRow] = []
    queues = list(by_id.values())
    while len(out) < limit:
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop(0))
    return out


def languages(rows: Sequence[IFEvalRow]) -> list[str]:
    """The response languages the language instruction asks for in `rows`, sorted."""
    return sorted({r.kwargs[0]["language"] for r in rows if r.instruction_id_list[0] == LANGUAGE})


def vector_name(row: IFEvalRow) -> str:
    """The name of the vector that steers `row`: its instruction (and language)."""
    iid = row.instruction_id_list[0]
    return f"{iid}/{row.kwargs[0]['language']}" if iid == LANGUAGE else iid


def format_vector_pairs(
    queries: Sequence[str], instructions: Sequence[str], langs: Sequence[str], *, n: int, seed: int
) -> dict[str, list[PromptPair]]:
    """The training pairs of every format vector, by vector name (`vector_name`)."""
    pairs = {}
    for iid in instructions:
        for lang in langs if iid == LANGUAGE else [None]:
            kwargs = {"language": lang} if lang else None
            pairs[f"{iid}/{lang}" if lang else iid] = wb.instruction_pairs(queries, iid, n=n, seed=seed, kwargs=kwargs)
    return pairs


def validation_rows(queries: Sequence[str], iid: str, langs: Sequence[str], n: int, seed: int) -> list[IFEvalRow]:
    """`n` validation rows of instruction `iid` on the first `n` of `queries` (the language
    instruction cycles through `langs`)."""
    if iid == LANGUAGE:
        pairs = [
            wb.instruction_pairs([q], iid, kwargs={"language": langs[i % len(langs)]}, seed=seed + i)[0]
            for i, q in enumerate(queries[:n])
        ]
    else:
        pairs = wb.instruction_pairs(queries[:n], iid, seed=seed)
    return [pair_row(p, f"val/{iid}/{i}") for i, p in enumerate(pairs)]


def pair_row(pair: PromptPair, key: str) -> IFEvalRow:
    """A prompt pair as a row to generate and score: its instruction, the verifier arguments."""
    iid = pair.instruction_id or ""
    return IFEvalRow(key, pair.with_instruction, (iid,), (pair.kwargs,), pair.without_instruction)
