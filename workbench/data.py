"""IFEval-style data: rows read from JSONL, from any path.

    rows = wb.load_ifeval("my_prompts.jsonl")           # key, prompt, instruction_id_list, kwargs, ...
    test = wb.format_test_rows()                         # the paper's 163 single-instruction format prompts

Accepted line format (the paper's released JSONL): `prompt` (required), `key` (optional: the line
number when absent), `instruction_id_list`, `kwargs`, `prompt_without_instruction`; other fields
are kept in `row.extra`. Lines of `ifeval_wo_instructions.jsonl` (fields `original_prompt` and
`model_output`) are read as prompt = original_prompt, prompt_without_instruction = model_output.
A key may repeat (the paper's keyword test files hold one line per word, each with the IFEval
key of its prompt); `row.row_id` tells such rows apart.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

FORMAT_INSTRUCTIONS = (
    "change_case:english_lowercase",
    "change_case:english_capital",
    "change_case:capital_word_frequency",
    "detectable_format:json_format",
    "detectable_format:multiple_sections",
    "detectable_format:number_bullet_lists",
    "detectable_format:number_highlighted_sections",
    "detectable_format:title",
    "detectable_format:constrained_response",
    "punctuation:no_comma",
    "startend:end_checker",
    "startend:quotation",
    "language:response_language",
)


def data_path(name: str = "") -> Path:
    """The packaged copy of the paper's data files (see SOURCE.md there)."""
    return Path(str(files("workbench") / "datasets" / "ifeval-steer")) / name


# The verifier arguments of IFEval's instructions by type (the keyword arguments of each
# `build_description` in if_verifiable.ifeval), checked when a file is read: a verifier given
# "3" for 3 fails only when a response is scored, far from the line at fault.
INT_KWARGS = frozenset(
    {
        "capital_frequency",
        "frequency",
        "let_frequency",
        "nth_paragraph",
        "num_bullets",
        "num_highlights",
        "num_paragraphs",
        "num_placeholders",
        "num_sections",
        "num_sentences",
        "num_words",
    }
)
STR_KWARGS = frozenset(
    {
        "capital_relation",
        "end_phrase",
        "first_word",
        "keyword",
        "language",
        "let_relation",
        "letter",
        "postscript_marker",
        "prompt_to_repeat",
        "relation",
        "section_spliter",
    }
)
WORD_LIST_KWARGS = frozenset({"forbidden_words", "keywords"})


@dataclass(frozen=True)
class IFEvalRow:
    """One IFEval-style prompt. `kwargs[i]` holds the verifier arguments of `instruction_id_list[i]`.

    `row_id` is unique within a file: the key when the key is unique, and f"{key}#{n}" for the
    n-th line (n = 1, 2, ... in file order) of a key that repeats. Jobs and pairings use it;
    rows built by hand get row_id = key."""

    key: str
    prompt: str
    instruction_id_list: tuple[str, ...] = ()
    kwargs: tuple[dict[str, Any], ...] = ()
    prompt_without_instruction: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    row_id: str = ""

    def __post_init__(self) -> None:
        if not self.row_id:
            object.__setattr__(self, "row_id", self.key)


def known_instruction_ids() -> frozenset[str]:
    from if_verifiable.ifeval import INSTRUCTION_DICT

    return frozenset(INSTRUCTION_DICT)


def check_instruction_id(instruction_id: str) -> None:
    if instruction_id not in known_instruction_ids():
        raise ValueError(
            f"unknown instruction id {instruction_id!r}. Fix: use an IFEval id such as "
            f"'change_case:english_lowercase' (the full list: "
            f"sorted(wb.data.known_instruction_ids()))"
        )


def load_ifeval(path: str | Path, *, check_ids: bool = True) -> list[IFEvalRow]:
    """Read IFEval-style JSONL; errors name the file, the line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no IFEval file at {path}. Fix: pass the path of a JSONL file (the paper's files are under {data_path()})"
        )
    rows = []
    # lines split on b"\n" and decoded one by one, so an encoding error names its line
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        where = f"{path}, line {number}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{where}: not UTF-8 text (byte {raw[err.start : err.start + 1]!r} at "
                f"column {err.start + 1}). Fix: save the file as UTF-8."
            ) from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{where}: not valid JSON ({err.msg} at column {err.colno}). Fix: one JSON object per line."
            ) from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
        row = _row(record, number, where)
        if check_ids:
            for instruction_id in row.instruction_id_list:
                try:
                    check_instruction_id(instruction_id)
                except ValueError as err:
                    raise ValueError(f"{where}: {err}") from None
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no rows. Fix: one JSON object per line.")
    return _with_row_ids(rows, path)


def _with_row_ids(rows: list[IFEvalRow], path: Path) -> list[IFEvalRow]:
    counts, seen = Counter(r.key for r in rows), Counter[str]()
    out = []
    for row in rows:
        seen[row.key] += 1
        out.append(replace(row, row_id=row.key if counts[row.key] == 1 else f"{row.key}#{seen[row.key]}"))
    clash = [r for r, n in Counter(r.row_id for r in out).items() if n > 1]
    if clash:  # a key written like a numbered repeat, e.g. "7#2" beside two lines keyed 7
        raise ValueError(
            f"{path}: row id {clash[0]!r} is both a key and a numbered repeat of a key. Fix: rename that key."
        )
    return out


def _row(record: dict[str, Any], number: int, where: str) -> IFEvalRow:
    record = dict(record)
    if "original_prompt" in record and "model_output" in record:  # ifeval_wo_instructions.jsonl
        record["rewrite_prompt"] = record.pop("prompt", None)
        record["prompt"] = record.pop("original_prompt")
        record["prompt_without_instruction"] = record.pop("model_output")
    if not isinstance(record.get("prompt"), str):
        raise ValueError(
            f"{where}: missing field 'prompt' (a string). Fix: every line needs "
            f"'prompt'; 'key', 'instruction_id_list', 'kwargs' and "
            f"'prompt_without_instruction' are optional."
        )
    ids = record.pop("instruction_id_list", []) or []
    kwargs = record.pop("kwargs", None)
    if kwargs is None:
        kwargs = [{} for _ in ids]
    if not isinstance(ids, list) or not isinstance(kwargs, list) or len(kwargs) != len(ids):
        raise ValueError(
            f"{where}: 'instruction_id_list' and 'kwargs' must be lists of equal length (got {ids!r} and {kwargs!r})"
        )
    for iid in ids:
        if not isinstance(iid, str):
            raise ValueError(
                f"{where}: 'instruction_id_list' holds {iid!r}, not an instruction id. "
                f'Fix: a list of strings such as "punctuation:no_comma".'
            )
    for i, kw in enumerate(kwargs):
        if kw is not None and not isinstance(kw, dict):
            raise ValueError(
                f"{where}: kwargs[{i}] is {kw!r}, not an object. Fix: one object of "
                f"verifier arguments (or null) per instruction, e.g. "
                f'[{{"num_bullets": 3}}].'
            )
        for name, value in (kw or {}).items():
            _check_kwarg(name, value, f"{where}: kwargs[{i}] ({ids[i]})")
    key = record.pop("key", number)
    if not isinstance(key, (str, int)) or isinstance(key, bool):
        raise ValueError(
            f"{where}: field 'key' is {key!r}. Fix: a string or an integer (or leave it out: the line number is used)."
        )
    without = record.pop("prompt_without_instruction", None)
    if without is not None and not isinstance(without, str):
        raise ValueError(
            f"{where}: field 'prompt_without_instruction' is {without!r}. Fix: the "
            f"request without its instruction, as a string (or null)."
        )
    return IFEvalRow(
        key=str(key),
        prompt=record.pop("prompt"),
        instruction_id_list=tuple(ids),
        kwargs=tuple({k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs),
        prompt_without_instruction=without,
        extra=record,
    )


def _check_kwarg(name: str, value: Any, where: str) -> None:
    """A verifier argument of the type the verifier needs (None is dropped, as IFEval does)."""
    if value is None:
        return
    if name in INT_KWARGS and (not isinstance(value, int) or isinstance(value, bool)):
        example = value.strip() if isinstance(value, str) and value.strip().isdigit() else "3"
        raise ValueError(
            f"{where}: {name!r} is {value!r}, the verifier needs an integer. "
            f'Fix: write a JSON number without quotes, e.g. "{name}": {example}.'
        )
    if name in STR_KWARGS and not isinstance(value, str):
        raise ValueError(f"{where}: {name!r} is {value!r}, the verifier needs a string. Fix: write it in quotes.")
    if name in WORD_LIST_KWARGS and not (isinstance(value, list) and all(isinstance(w, str) for w in value)):
        raise ValueError(
            f"{where}: {name!r} is {value!r}, the verifier needs a list of words. "
            f'Fix: e.g. {{"{name}": ["cat", "dog"]}}.'
        )


def join_without_instruction(rows: Iterable[IFEvalRow], without: Iterable[IFEvalRow]) -> list[IFEvalRow]:
    """Fill `prompt_without_instruction` of `rows` from a file like ifeval_wo_instructions.jsonl,
    matched by row id, else by key: every line of a repeated key (the paper's one line per word)
    takes the request of its key's single line in `without`."""
    by_id = {w.row_id: w.prompt_without_instruction for w in without}
    out = []
    for row in rows:
        match = row.row_id if row.row_id in by_id else row.key
        if match not in by_id:
            raise ValueError(
                f"row with key {row.key!r} has no match in the without-instruction "
                f"file. Fix: pass a file holding every key (once, or repeated as "
                f"often and in the same order as in the rows' file)."
            )
        out.append(replace(row, prompt_without_instruction=by_id[match]))
    return out


def format_test_rows(
    path: str | Path | None = None,
    without_path: str | Path | None = None,
    instructions: Iterable[str] = FORMAT_INSTRUCTIONS,
) -> list[IFEvalRow]:
    """The single-instruction format prompts of IFEval (163 in the paper), joined by key with
    their request without the instruction. A user file already carrying
    `prompt_without_instruction` needs no `without_path`."""
    rows = load_ifeval(path or data_path("ifeval_input_data.jsonl"))
    wanted = set(instructions)
    rows = [r for r in rows if len(r.instruction_id_list) == 1 and r.instruction_id_list[0] in wanted]
    if path is None or without_path is not None or any(r.prompt_without_instruction is None for r in rows):
        rows = join_without_instruction(rows, load_ifeval(without_path or data_path("ifeval_wo_instructions.jsonl")))
    return rows


def rows_hash(rows: Iterable[IFEvalRow]) -> str:
    """A content hash of rows, for run records."""
    digest = hashlib.sha256()
    for r in rows:
        digest.update(
            json.dumps(
                [r.key, r.prompt, r.instruction_id_list, r.kwargs, r.prompt_without_instruction], sort_keys=True
            ).encode()
        )
    return digest.hexdigest()
