"""Checks every experiment runs before any compute: the configuration, the output directory, and
the data against the model. A mistake found here costs nothing; found after the vector and
validation phases it costs an hour and, once a run directory exists, can lock the fixed data out
of a resume.

    check_config(cfg)                                    # types and ranges of every field
    check_out(out)                                       # a directory, or nothing yet
    check_prompts_fit(model, prompts, max_new_tokens=96, truncate=False)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.data import IFEvalRow
    from workbench.prompts import PromptFormat
    from workbench.types import Model

# fields that count something: at least 1 wherever an experiment config has them
POSITIVE = (
    "max_new_tokens",
    "batch_size",
    "n_pairs",
    "n_validation",
    "layer_step",
    "limit",
    "n_length_pairs",
    "max_query_chars",
)


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args))
    if origin in (list, dict):
        return isinstance(value, origin)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a hint this check does not understand: let it through


def check_config(cfg: Any) -> None:
    """Every field of the config dataclass has its declared type, and counts are at least 1.
    Raises ValueError naming each bad field, its value and the fix."""
    hints = typing.get_type_hints(type(cfg))
    problems = []
    for f in dataclasses.fields(cfg):
        value, hint = getattr(cfg, f.name), hints.get(f.name, Any)
        if not _matches(value, hint):
            shown = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
            problems.append(f"{f.name}={value!r} is not of type {shown}")
        elif f.name in POSITIVE and isinstance(value, int) and value < 1:
            problems.append(f"{f.name}={value!r} must be at least 1")
    problems += _search_plan_problems(cfg)
    if problems:
        raise ValueError(
            f"invalid {type(cfg).__name__}: {'; '.join(problems)}. Fix: correct "
            f"the option (or --set KEY=VALUE) and run again; nothing was written."
        )


def _search_plan_problems(cfg: Any) -> list[str]:
    """A config with a search (search_prompts, search_keep, n_validation) whose plan cannot run."""
    prompts, keep = getattr(cfg, "search_prompts", None), getattr(cfg, "search_keep", None)
    if prompts is None or keep is None:
        return []
    out = []
    if not prompts or list(prompts) != sorted(prompts) or min(prompts) < 1:
        out.append(f"search_prompts={prompts!r} must be increasing counts of at least 1")
    if len(keep) != len(prompts) - 1 or any(k < 1 for k in keep):
        out.append(f"search_keep={keep!r} needs one count (at least 1) per round but the last of {prompts!r}")
    n_validation = getattr(cfg, "n_validation", None)
    if prompts and isinstance(n_validation, int) and prompts[-1] > n_validation:
        out.append(
            f"the search's last round needs search_prompts[-1]={prompts[-1]} validation prompts per "
            f"group but n_validation={n_validation} (raise n_validation or lower search_prompts)"
        )
    return out


def check_out(out: str | Path) -> Path:
    """The run directory: an existing directory (resumed) or a path that does not exist yet."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"--out {out} is a file, not a directory. Fix: pass a directory path "
            f"(a new one starts a run, an existing run directory resumes it)."
        )
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(
                    f"--out {out}: {parent} is a file, so the run directory cannot "
                    f"be made under it. Fix: pass another --out."
                )
            break
    return out


def check_prompts_fit(
    model: Model,
    prompts: Sequence[tuple[str, str]],
    *,
    max_new_tokens: int,
    truncate: bool = False,
    fmt: PromptFormat | None = None,
) -> None:
    """Every (label, plain prompt) pair, formatted for `model`, leaves room for `max_new_tokens`
    in its context; with `truncate` the generation will cut prompt starts instead."""
    if truncate:
        return
    from workbench.prompts import default_format, encode

    fmt = fmt or default_format(model)
    labels, texts = zip(*prompts) if prompts else ((), ())
    if not texts:
        return
    n_ctx = model.cfg.n_ctx
    ids = encode(model.tokenizer, fmt.apply_all(model.tokenizer, list(texts)), fmt)
    long = [(label, len(i)) for label, i in zip(labels, ids) if len(i) + max_new_tokens > n_ctx]
    if long:
        shown = ", ".join(f"{label} ({n} tokens)" for label, n in long[:5])
        more = f" and {len(long) - 5} more" if len(long) > 5 else ""
        raise ValueError(
            f"{len(long)} of {len(texts)} prompts do not fit the context of "
            f"{model.wb_info.name if hasattr(model, 'wb_info') else 'the model'} ({n_ctx} tokens) "
            f"with max_new_tokens={max_new_tokens}: {shown}{more}. Fix: --truncate (or --set "
            f"truncate=true) to cut each prompt's start, recorded per generation; a lower "
            f"max_new_tokens; shorter prompts in the data; or a model with a longer context. "
            f"Nothing was computed."
        )


def row_prompts(rows: Iterable[IFEvalRow]) -> list[tuple[str, str]]:
    """(label, prompt) of every row with and, where it has one, without its instruction."""
    return [
        (f"{r.row_id}{tag}", text)
        for r in rows
        for tag, text in (("", r.prompt), (" (without)", r.prompt_without_instruction))
        if text is not None
    ]
