"""IFEval-style data: rows read from JSONL and prompts formatted like the model's own chat.

    rows = wb.load_ifeval("ifeval_input_data.jsonl")
    rows[0].key, rows[0].instruction_id_list, rows[0].kwargs
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class IFEvalRow:
    """One IFEval-style prompt. `kwargs[i]` holds the verifier arguments of `instruction_id_list[i]`."""

    key: str
    prompt: str
    instruction_id_list: tuple[str, ...] = ()
    kwargs: tuple[dict[str, Any], ...] = ()
    prompt_without_instruction: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
