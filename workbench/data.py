"""IFEval-style data: rows read from JSONL, from any path.

    rows = wb.load_ifeval("my_prompts.jsonl")           # key, prompt, instruction_id_list, kwargs, ...
    test = wb.format_test_rows()                         # the paper's 163 single-instruction format prompts

Accepted line format (the paper's released JSONL): `prompt` (required), `key` (optional: the line
number when absent), `instruction_id_list`, `kwargs`, `prompt_without_instruction`; other fields
are kept in `row.extra`. Lines of `ifeval_wo_instructions.jsonl` (fields `original_prompt` and
`model_output`) are read as prompt = original_prompt, prompt_without_instruction = model_output.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Iterable

FORMAT_INSTRUCTIONS = (
    "change_case:english_lowercase", "change_case:english_capital",
    "change_case:capital_word_frequency", "detectable_format:json_format",
    "detectable_format:multiple_sections", "detectable_format:number_bullet_lists",
    "detectable_format:number_highlighted_sections", "detectable_format:title",
    "detectable_format:constrained_response", "punctuation:no_comma", "startend:end_checker",
    "startend:quotation", "language:response_language",
)


def data_path(name: str = "") -> Path:
    """The packaged copy of the paper's data files (see SOURCE.md there)."""
    return Path(str(files("workbench") / "datasets" / "ifeval-steer")) / name


@dataclass(frozen=True)
class IFEvalRow:
    """One IFEval-style prompt. `kwargs[i]` holds the verifier arguments of `instruction_id_list[i]`."""

    key: str
    prompt: str
    instruction_id_list: tuple[str, ...] = ()
    kwargs: tuple[dict[str, Any], ...] = ()
    prompt_without_instruction: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def known_instruction_ids() -> frozenset[str]:
    from if_verifiable.ifeval import INSTRUCTION_DICT

    return frozenset(INSTRUCTION_DICT)


def check_instruction_id(instruction_id: str) -> None:
    if instruction_id not in known_instruction_ids():
        raise ValueError(
            f"unknown instruction id {instruction_id!r}. Fix: use an IFEval id such as "
            f"'change_case:english_lowercase' (the full list: "
            f"sorted(wb.data.known_instruction_ids()))")


def load_ifeval(path: str | Path, *, check_ids: bool = True) -> list[IFEvalRow]:
    """Read IFEval-style JSONL; errors name the file, the line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no IFEval file at {path}. Fix: pass the path of a JSONL file "
                                f"(the paper's files are under {data_path()})")
    rows, seen = [], set()
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg} at column {err.colno}). "
                                 f"Fix: one JSON object per line.") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            row = _row(record, number, where)
            if row.key in seen:
                raise ValueError(f"{where}: duplicate key {row.key!r}. Fix: keys must be unique.")
            seen.add(row.key)
            if check_ids:
                for instruction_id in row.instruction_id_list:
                    try:
                        check_instruction_id(instruction_id)
                    except ValueError as err:
                        raise ValueError(f"{where}: {err}") from None
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no rows. Fix: one JSON object per line.")
    return rows


def _row(record: dict, number: int, where: str) -> IFEvalRow:
    record = dict(record)
    if "original_prompt" in record and "model_output" in record:  # ifeval_wo_instructions.jsonl
        record["rewrite_prompt"] = record.pop("prompt", None)
        record["prompt"] = record.pop("original_prompt")
        record["prompt_without_instruction"] = record.pop("model_output")
    if not isinstance(record.get("prompt"), str):
        raise ValueError(f"{where}: missing field 'prompt' (a string). Fix: every line needs "
                         f"'prompt'; 'key', 'instruction_id_list', 'kwargs' and "
                         f"'prompt_without_instruction' are optional.")
    ids = record.pop("instruction_id_list", []) or []
    kwargs = record.pop("kwargs", None)
    if kwargs is None:
        kwargs = [{} for _ in ids]
    if not isinstance(ids, list) or not isinstance(kwargs, list) or len(kwargs) != len(ids):
        raise ValueError(f"{where}: 'instruction_id_list' and 'kwargs' must be lists of equal "
                         f"length (got {ids!r} and {kwargs!r})")
    key = record.pop("key", number)
    return IFEvalRow(
        key=str(key), prompt=record.pop("prompt"), instruction_id_list=tuple(ids),
        kwargs=tuple({k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs),
        prompt_without_instruction=record.pop("prompt_without_instruction", None), extra=record)


def join_without_instruction(rows: Iterable[IFEvalRow], without: Iterable[IFEvalRow]) -> list[IFEvalRow]:
    """Fill `prompt_without_instruction` of `rows` from a file like ifeval_wo_instructions.jsonl."""
    by_key = {w.key: w.prompt_without_instruction for w in without}
    out = []
    for row in rows:
        if row.key not in by_key:
            raise ValueError(f"row with key {row.key!r} has no match in the without-instruction "
                             f"file. Fix: pass a file holding every key.")
        out.append(IFEvalRow(row.key, row.prompt, row.instruction_id_list, row.kwargs,
                             by_key[row.key], row.extra))
    return out


def format_test_rows(path: str | Path | None = None, without_path: str | Path | None = None,
                     instructions: Iterable[str] = FORMAT_INSTRUCTIONS) -> list[IFEvalRow]:
    """The single-instruction format prompts of IFEval (163 in the paper), joined by key with
    their request without the instruction. A user file already carrying
    `prompt_without_instruction` needs no `without_path`."""
    rows = load_ifeval(path or data_path("ifeval_input_data.jsonl"))
    wanted = set(instructions)
    rows = [r for r in rows if len(r.instruction_id_list) == 1 and r.instruction_id_list[0] in wanted]
    if path is None or without_path is not None or any(r.prompt_without_instruction is None for r in rows):
        rows = join_without_instruction(
            rows, load_ifeval(without_path or data_path("ifeval_wo_instructions.jsonl")))
    return rows


def rows_hash(rows: Iterable[IFEvalRow]) -> str:
    """A content hash of rows, for run records."""
    digest = hashlib.sha256()
    for r in rows:
        digest.update(json.dumps([r.key, r.prompt, r.instruction_id_list, r.kwargs,
                                  r.prompt_without_instruction], sort_keys=True).encode())
    return digest.hexdigest()
