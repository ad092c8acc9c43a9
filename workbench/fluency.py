"""Fluency and degeneration: perplexity under the unsteered model, and repetition measures.

    ppl = wb.fluency.perplexity(model, responses)        # each response alone
    table = wb.fluency.fluency_table(responses, ppl, min_ppl=0.0)  # ppl, distinct_1, distinct_2, ...
    table["degenerate"]                                   # judged by repetition alone

The paper judges degeneration by GPT-2 perplexity < 2.5 (very low perplexity = looping). That
floor is calibrated for GPT-2 reading another model's text: a model scoring its own greedy
answers falls under it on fluent lists and code, and with `prompts=` (perplexity of the answer
given its prompt) it flagged 7 of 8 normal answers in the check issue 17 reports. So the experiments pass
`min_ppl=0.0`: `is_degenerate` (workbench.degeneration, named here too) then judges by
repetition alone, and perplexity is reported beside it. Use the perplexity floor only with a
perplexity calibrated for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Unpack

import pandas as pd
import torch
from torch import nn

# the repetition measures and the rule live in workbench.degeneration; they are part of this
# module's face too (wb.fluency.is_degenerate), so they are named here
from workbench.degeneration import (
    Thresholds,
    compression_ratio,
    degeneration_reason,
    distinct_n,
    is_degenerate,
    longest_run,
    repeated_unit,
    units,
    without_json,
    words,
)

__all__ = [
    "compression_ratio",
    "degeneration_reason",
    "distinct_n",
    "fluency_table",
    "is_degenerate",
    "longest_run",
    "perplexity",
    "repeated_unit",
    "units",
    "without_json",
    "words",
]

if TYPE_CHECKING:
    from workbench.types import Model


def perplexity(
    model: Model,
    texts: Sequence[str],
    prompts: Sequence[str] | None = None,
    *,
    batch_size: int = 8,
    add_bos: bool | None = None,
) -> list[float]:
    """Perplexity of each text under `model`, counting only the text's own tokens.

        ppl = perplexity(model, responses)                        # responses alone
        ppl = perplexity(model, responses, prompts=fmt.apply_all(model.tokenizer, queries))

    `model` is a TransformerBridge (its HF model `model.original_model` and
    `model.tokenizer` are used directly) or anything with those two attributes.
    Prompts are already formatted strings (chat template applied), tokenized without
    special tokens like `workbench.prompts.encode`; the response is tokenized on its
    own and appended, as its tokens were when it was generated. `add_bos` puts the
    BOS token first (never twice); default: only when there are no prompts, so that
    the first response token is scored. Loss is computed in float32. An empty text
    (no tokens to score) gives NaN.
    """
    if prompts is not None and len(prompts) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(prompts)} prompts")
    hf, tok = getattr(model, "original_model", model), model.tokenizer
    add_bos = prompts is None if add_bos is None else add_bos
    seqs = []  # (token ids, number of leading context tokens not scored)
    for i, text in enumerate(texts):
        ctx = tok(prompts[i], add_special_tokens=False)["input_ids"] if prompts is not None else []
        if add_bos and tok.bos_token_id is not None and ctx[:1] != [tok.bos_token_id]:
            ctx = [tok.bos_token_id] + ctx
        resp = tok(text, add_special_tokens=False)["input_ids"] if text else []
        seqs.append((ctx + resp, len(ctx)))
    out = [math.nan] * len(texts)
    # Batches of similar lengths waste less compute on padding.
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    scorable = [i for i in order if len(seqs[i][0]) - max(seqs[i][1], 1) > 0]
    device = next(hf.parameters()).device
    was_training = hf.training
    hf.eval()  # dropout would make perplexity random; the mode is restored below
    try:
        with torch.no_grad():
            for start in range(0, len(scorable), batch_size):
                batch = scorable[start : start + batch_size]
                for i, nll in zip(batch, _mean_nll(hf, [seqs[i] for i in batch], device)):
                    out[i] = math.exp(nll)
    finally:
        hf.train(was_training)
    return out


def _mean_nll(hf: nn.Module, seqs: list[tuple[list[int], int]], device: torch.device) -> list[float]:
    """Mean next-token NLL over positions >= n_ctx of each (ids, n_ctx), right padded."""
    width = max(len(ids) for ids, _ in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)  # pad id is irrelevant: masked
    attn = torch.zeros(len(seqs), width, dtype=torch.long)
    scored = torch.zeros(len(seqs), width, dtype=torch.bool)
    for row, (seq, n_ctx) in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq)
        attn[row, : len(seq)] = 1
        scored[row, max(n_ctx, 1) : len(seq)] = True  # token 0 has no prediction
    logits = hf(input_ids=ids.to(device), attention_mask=attn.to(device)).logits
    # One row at a time in float32: a whole batch of 256k-vocab logits upcast at once
    # would take gigabytes.
    nll = torch.stack(
        [
            torch.nn.functional.cross_entropy(logits[row, :-1].float(), ids[row, 1:].to(device), reduction="none").cpu()
            for row in range(len(seqs))
        ]
    )
    mask = scored[:, 1:]
    return ((nll * mask).sum(1) / mask.sum(1)).tolist()


def fluency_table(
    texts: Sequence[str], ppl: Sequence[float] | None = None, **thresholds: Unpack[Thresholds]
) -> pd.DataFrame:
    """One line per text: ppl, distinct_1, distinct_2, compression_ratio, degenerate,
    degenerate_reason.

        fluency_table(responses, perplexity(model, responses))
        fluency_table(responses, min_distinct_2=0.4)   # thresholds go to degeneration_reason

    The index is the texts' positions; `ppl` is NaN throughout when not given.
    `degenerate_reason` is `degeneration_reason`'s answer ("" when not degenerate).
    """
    if ppl is not None and len(ppl) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(ppl)} perplexities")
    values = [math.nan] * len(texts) if ppl is None else [float(p) for p in ppl]
    reasons = [degeneration_reason(t, p, **thresholds) for t, p in zip(texts, values, strict=True)]
    return pd.DataFrame(
        {
            "ppl": values,
            "distinct_1": [distinct_n(t, 1) for t in texts],
            "distinct_2": [distinct_n(t, 2) for t in texts],
            "compression_ratio": [compression_ratio(t) for t in texts],
            "degenerate": [bool(r) for r in reasons],
            "degenerate_reason": reasons,
        },
        columns=["ppl", "distinct_1", "distinct_2", "compression_ratio", "degenerate", "degenerate_reason"],
    )
