"""IFEval scoring with the verifiers of the `if-verifiable` package, fully offline.

    scores = wb.score_ifeval(rows, responses)   # one line per (prompt, instruction)
    scores.groupby("instruction_id")[["strict", "loose"]].mean()
    wb.prompt_level(scores)["loose"].mean()     # prompt-level loose accuracy

Strict and loose are IFEval's (google-research `evaluation_lib`): strict checks the
response as given; loose passes if any of eight variants passes (as given, `*`
removed, first line / last line / both removed, and those with `*` removed), using
the package's own `get_loose_transformations`. An empty or whitespace-only response
fails both.

Unlike `if_verifiable.common.evaluate_instructions` we do not strip `<think>` blocks
(the original IFEval does not), we keep one line per instruction even for an empty
response, and an unknown instruction id is an error instead of being skipped. So is
a missing verifier argument, which IFEval would fill with a random value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import langdetect
import pandas as pd
from if_verifiable.common import get_loose_transformations
from if_verifiable.ifeval import instructions_util
from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

from workbench._punkt import ensure_punkt_tab
from workbench.data import IFEvalRow

# The verifiers call NLTK Punkt (sentence counts; word_tokenize for capital-word
# frequency); make its English model available from an installed wheel, no download.
ensure_punkt_tab()
# langdetect samples at random; an unseeded run can flip the verdict of language and
# case checks on short or mixed texts between runs. Seeding is its documented fix.
langdetect.DetectorFactory.seed = 0

SCORE_COLUMNS = ["prompt_index", "key", "instruction_id", "strict", "loose"]
_REGISTRY = "if_verifiable.ifeval.instructions_registry.INSTRUCTION_DICT"


def _checker(instruction_id: str, kwargs: dict[str, Any], prompt: str) -> Any:  # an if_verifiable Instruction
    """A built IFEval checker, configured as IFEval's evaluation_lib does."""
    checker = INSTRUCTION_DICT[instruction_id](instruction_id)
    # Datasets store every instruction's kwargs in one schema, so absent ones are None;
    # IFEval drops them before building.
    given = {k: v for k, v in kwargs.items() if v is not None}
    # A missing argument would be drawn at random by build_description (that is how
    # IFEval generates instructions), so the verdict would be random: refuse instead.
    missing = [k for k in checker.get_instruction_args_keys() if k not in given]
    if missing:
        raise ValueError(f"missing argument(s) {missing}")
    checker.build_description(**given)
    args = checker.get_instruction_args()
    if args and "prompt" in args:
        checker.build_description(prompt=prompt)
    return checker


def _validate(rows: Sequence[IFEvalRow], responses: Sequence[str]) -> None:
    if len(rows) != len(responses):
        raise ValueError(
            f"got {len(rows)} rows but {len(responses)} responses; score_ifeval needs one response per row"
        )
    for i, row in enumerate(rows):
        if row.kwargs and len(row.kwargs) != len(row.instruction_id_list):
            raise ValueError(
                f"row {i} (key {row.key!r}) has {len(row.instruction_id_list)} "
                f"instruction ids but {len(row.kwargs)} kwargs dicts"
            )
        for iid in row.instruction_id_list:
            if iid not in INSTRUCTION_DICT:
                raise ValueError(
                    f"unknown IFEval instruction id {iid!r} in row {i} "
                    f"(key {row.key!r}); the known ids are the keys of "
                    f"{_REGISTRY} (sorted(wb.data.known_instruction_ids()))"
                )


def score_ifeval(rows: Sequence[IFEvalRow], responses: Sequence[str]) -> pd.DataFrame:
    """Strict and loose IFEval verdicts, one line per (prompt, instruction).

        scores = score_ifeval(rows, responses)
        scores[["prompt_index", "key", "instruction_id", "strict", "loose"]]

    `responses[i]` answers `rows[i]`; `prompt_index` is `i`. A row with an empty
    `kwargs` tuple means "no arguments" for each of its instructions.
    """
    _validate(rows, responses)
    records = []
    for i, (row, response) in enumerate(zip(rows, responses)):
        # Computed once per response: the variants do not depend on the instruction.
        variants = get_loose_transformations(response)
        for j, iid in enumerate(row.instruction_id_list):
            kwargs = row.kwargs[j] if row.kwargs else {}
            try:
                checker = _checker(iid, kwargs, row.prompt)
            except (TypeError, ValueError) as err:  # the verifier's own message lacks the row
                raise ValueError(
                    f"row {i} (key {row.key!r}): cannot build {iid!r} from kwargs {kwargs!r}: {err}"
                ) from err
            strict = bool(response.strip() and checker.check_following(response))
            loose = any(v.strip() and checker.check_following(v) for v in variants)
            records.append((i, row.key, iid, strict, bool(loose)))
    df = pd.DataFrame.from_records(records, columns=SCORE_COLUMNS)
    return df.astype({"prompt_index": "int64", "strict": "bool", "loose": "bool"})


def prompt_level(scores: pd.DataFrame) -> pd.DataFrame:
    """Whether each prompt followed all of its instructions, strict and loose.

        prompt_level(score_ifeval(rows, responses))["loose"].mean()

    Columns: prompt_index, key, n_instructions, strict, loose; in prompt order. A row
    with no instructions has no score lines, so it has no line here either.
    """
    grouped = scores.groupby(["prompt_index", "key"], sort=True)
    out = grouped[["strict", "loose"]].all()
    out.insert(0, "n_instructions", grouped.size())
    return out.reset_index()


def count_sentences(text: str) -> int:
    """Sentences in `text` as IFEval's `length_constraints:number_sentences` counts them.

    This is the verifier's own function (NLTK Punkt, English), not a copy of it.

        count_sentences("Hello Mr. Smith. How are you?")  # 2
    """
    return int(instructions_util.count_sentences(text))
