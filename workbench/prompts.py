"""Formatting prompts like the model's own chat, and tokenizing them without surprises.

    fmt = wb.default_format(model)        # chat template for instruct models, "Q: ...\nA:" for base
    texts = fmt.apply_all(model.tokenizer, ["Write a poem."])
    ids = wb.prompts.encode(model.tokenizer, texts, fmt)
    batch = wb.prompts.left_pad(ids, model.tokenizer.pad_token_id, device)   # one padded batch

TransformerBridge's `to_tokens` prepends BOS to everything, which duplicates the chat template's
own header; here special tokens come only from the template, plus BOS where the format asks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from jaxtyping import Int
from torch import Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from workbench.types import Model

QA_TEMPLATE = "Q: {prompt}\nA:"


@dataclass(frozen=True)
class PromptFormat:
    """How a plain prompt becomes model input. Recorded in vectors and run records.

    kind: "chat" (the tokenizer's chat template with the generation prompt, so the last prompt
    token ends the assistant header), "template" (a str.format template with `{prompt}`, e.g. the
    base-model "Q: {prompt}\\nA:"), or "raw" (the text as given).
    """

    kind: str = "chat"
    template: str | None = None
    add_bos: bool = False
    system: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("chat", "template", "raw"):
            raise ValueError(f"unknown prompt format kind {self.kind!r}: use 'chat', 'template' or 'raw'")
        if self.kind == "template" and "{prompt}" not in (self.template or ""):
            raise ValueError(
                "a 'template' format needs a template containing '{prompt}', "
                "e.g. PromptFormat('template', 'Q: {prompt}\\nA:', add_bos=True)"
            )

    def apply(self, tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
        if self.kind == "raw":
            return prompt
        if self.kind == "template":
            assert self.template is not None  # __post_init__ refused a template format without one
            return self.template.replace("{prompt}", prompt)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "this tokenizer has no chat template. Fix: use "
                "PromptFormat('template', 'Q: {prompt}\\nA:', add_bos=True)"
            )
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": prompt})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert isinstance(text, str)  # tokenize=False gives the text
        return text

    def apply_all(self, tokenizer: PreTrainedTokenizerBase, prompts: Iterable[str]) -> list[str]:
        return [self.apply(tokenizer, p) for p in prompts]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


QA_FORMAT = PromptFormat("template", QA_TEMPLATE, add_bos=True)


def default_format(model: Model) -> PromptFormat:
    """Chat template for instruct models that have one; `Q: {prompt}\\nA:` for base models."""
    kind = getattr(getattr(model, "wb_info", None), "kind", None)
    has_template = bool(getattr(model.tokenizer, "chat_template", None))
    if kind == "base" or not has_template:
        return QA_FORMAT
    return PromptFormat("chat")


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], fmt: PromptFormat) -> list[list[int]]:
    """Token ids of already formatted texts: no special tokens but BOS where `fmt` asks."""
    ids: list[list[int]] = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if fmt.add_bos and bos is not None:
        ids = [[bos, *row] for row in ids]
    return ids


class LeftPadded(NamedTuple):
    """A batch of token id rows of different lengths, padded on the left so every row ends at
    the last position: `offsets[i]` pad tokens precede row i, the mask is 0 on them, and the
    position ids count each row's own tokens from 0, so a padded row computes what it
    computes alone."""

    input_ids: Int[Tensor, "batch pos"]
    mask: Int[Tensor, "batch pos"]
    position_ids: Int[Tensor, "batch pos"]
    offsets: Int[Tensor, " batch"]


def left_pad(ids: Sequence[Sequence[int]], pad_id: int | None, device: torch.device | str) -> LeftPadded:
    """`ids` as one left-padded batch on `device` (pad id 0 when the tokenizer has none: the
    mask hides it)."""
    width = max(len(row) for row in ids)
    pad = pad_id or 0
    offsets = torch.tensor([width - len(row) for row in ids], device=device)
    input_ids = torch.tensor([[pad] * (width - len(row)) + list(row) for row in ids], device=device)
    mask = (torch.arange(width, device=device)[None, :] >= offsets[:, None]).long()
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return LeftPadded(input_ids, mask, position_ids, offsets)
