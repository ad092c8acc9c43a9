"""Formatting prompts like the model's own chat, and tokenizing them without surprises.

    fmt = wb.default_format(model)        # chat template for instruct models, "Q: ...\nA:" for base
    texts = fmt.apply_all(model.tokenizer, ["Write a poem."])
    ids = wb.prompts.encode(model.tokenizer, texts, fmt)

TransformerBridge's `to_tokens` prepends BOS to everything, which duplicates the chat template's
own header; here special tokens come only from the template, plus BOS where the format asks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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

    def __post_init__(self):
        if self.kind not in ("chat", "template", "raw"):
            raise ValueError(f"unknown prompt format kind {self.kind!r}: use 'chat', 'template' or 'raw'")
        if self.kind == "template" and "{prompt}" not in (self.template or ""):
            raise ValueError(
                "a 'template' format needs a template containing '{prompt}', "
                "e.g. PromptFormat('template', 'Q: {prompt}\\nA:', add_bos=True)"
            )

    def apply(self, tokenizer, prompt: str) -> str:
        if self.kind == "raw":
            return prompt
        if self.kind == "template":
            return self.template.replace("{prompt}", prompt)
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "this tokenizer has no chat template. Fix: use "
                "PromptFormat('template', 'Q: {prompt}\\nA:', add_bos=True)"
            )
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def apply_all(self, tokenizer, prompts) -> list[str]:
        return [self.apply(tokenizer, p) for p in prompts]

    def to_dict(self) -> dict:
        return asdict(self)


QA_FORMAT = PromptFormat("template", QA_TEMPLATE, add_bos=True)


def default_format(model) -> PromptFormat:
    """Chat template for instruct models that have one; `Q: {prompt}\\nA:` for base models."""
    kind = getattr(getattr(model, "wb_info", None), "kind", None)
    has_template = bool(getattr(model.tokenizer, "chat_template", None))
    if kind == "base" or not has_template:
        return QA_FORMAT
    return PromptFormat("chat")


def encode(tokenizer, texts: list[str], fmt: PromptFormat) -> list[list[int]]:
    """Token ids of already formatted texts: no special tokens but BOS where `fmt` asks."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    if fmt.add_bos and tokenizer.bos_token_id is not None:
        ids = [[tokenizer.bos_token_id] + row for row in ids]
    return ids
