"""Fluency and degeneration: perplexity under the unsteered model, and repetition measures.

    ppl = wb.fluency.perplexity(model, responses, prompts=formatted_prompts)
    table = wb.fluency.fluency_table(responses, ppl)     # ppl, distinct_1, distinct_2, ...
    table["degenerate"].any()                             # drop this steering layer?

The paper drops a steering layer when any validation output is degenerate, judged by
GPT-2 perplexity < 2.5 (very low perplexity = the model is looping). `is_degenerate`
keeps that rule and adds two that need no model: few distinct word bigrams, and text
that zlib compresses extremely well.
"""
from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence

import pandas as pd
import torch

# Words and runs of punctuation, lower-cased: "I am. I am." -> i am . i am .
_TOKEN = re.compile(r"\w+|[^\w\s]+")


def perplexity(model, texts: Sequence[str], prompts: Sequence[str] | None = None, *,
               batch_size: int = 8, add_bos: bool | None = None) -> list[float]:
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
                batch = scorable[start:start + batch_size]
                for i, nll in zip(batch, _mean_nll(hf, [seqs[i] for i in batch], device)):
                    out[i] = math.exp(nll)
    finally:
        hf.train(was_training)
    return out


def _mean_nll(hf, seqs, device) -> list[float]:
    """Mean next-token NLL over positions >= n_ctx of each (ids, n_ctx), right padded."""
    width = max(len(ids) for ids, _ in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)  # pad id is irrelevant: masked
    attn = torch.zeros(len(seqs), width, dtype=torch.long)
    scored = torch.zeros(len(seqs), width, dtype=torch.bool)
    for row, (seq, n_ctx) in enumerate(seqs):
        ids[row, :len(seq)] = torch.tensor(seq)
        attn[row, :len(seq)] = 1
        scored[row, max(n_ctx, 1):len(seq)] = True  # token 0 has no prediction
    logits = hf(input_ids=ids.to(device), attention_mask=attn.to(device)).logits
    # One row at a time in float32: a whole batch of 256k-vocab logits upcast at once
    # would take gigabytes.
    nll = torch.stack([
        torch.nn.functional.cross_entropy(logits[row, :-1].float(), ids[row, 1:].to(device),
                                          reduction="none").cpu()
        for row in range(len(seqs))])
    mask = scored[:, 1:]
    return ((nll * mask).sum(1) / mask.sum(1)).tolist()


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens, the unit of `distinct_n`."""
    return _TOKEN.findall(text.lower())


def distinct_n(text: str, n: int) -> float:
    """Unique n-grams / all n-grams over `words(text)`; NaN if there are fewer than n words.

        distinct_n("I am. I am.", 2)   # bigrams (i,am) (am,.) (.,i) (i,am) (am,.) -> 3/5
    """
    w = words(text)
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


def compression_ratio(text: str) -> float:
    """zlib-compressed size / raw size of the UTF-8 text (lower = more repetitive); NaN if empty.

    Natural English prose of a few hundred bytes gives about 0.55-0.75, a looping
    response under 0.2. Short texts exceed 1 (zlib's fixed overhead).
    """
    raw = text.encode("utf-8")
    return len(zlib.compress(raw, 9)) / len(raw) if raw else math.nan


def is_degenerate(text: str, ppl: float | None = None, *, min_ppl: float = 2.5,
                  min_distinct_2: float = 0.5, min_words: int = 20,
                  min_compression: float = 0.25, min_bytes: int = 200) -> bool:
    """Whether a response is degenerate (looping or empty).

        is_degenerate(response, ppl)     # ppl from perplexity(...), or None to skip that rule

    Degenerate when any of:
      - the text is empty or whitespace only;
      - `ppl < min_ppl` (2.5: the paper's GPT-2 rule; very predictable text is repetition);
      - it has at least `min_words` (20) words and `distinct_n(text, 2) < min_distinct_2`
        (0.5; prose, lists, sections and JSON score 0.7-1.0, a loop under 0.25);
      - it has at least `min_bytes` (200) bytes and
        `compression_ratio(text) < min_compression` (0.25; prose is about 0.6).
    The length floors keep short answers ("My answer is yes.") from being judged
    by statistics that need more text. A NaN `ppl` is ignored.

    The 2.5 floor is calibrated for GPT-2 scoring the response alone. A model scoring
    its own greedy output given the prompt often lands below 2.5 on fluent text, so
    for such perplexities pass a calibrated `min_ppl` (or `ppl=None`).
    """
    if not text.strip():
        return True
    if ppl is not None and ppl < min_ppl:  # NaN compares False: no verdict from it
        return True
    if len(words(text)) >= min_words and distinct_n(text, 2) < min_distinct_2:
        return True
    return len(text.encode("utf-8")) >= min_bytes and compression_ratio(text) < min_compression


def fluency_table(texts: Sequence[str], ppl: Sequence[float] | None = None,
                  **degenerate_kwargs) -> pd.DataFrame:
    """One line per text: ppl, distinct_1, distinct_2, compression_ratio, degenerate.

        fluency_table(responses, perplexity(model, responses))
        fluency_table(responses, min_distinct_2=0.4)   # thresholds go to is_degenerate

    The index is the texts' positions; `ppl` is NaN throughout when not given.
    """
    if ppl is not None and len(ppl) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(ppl)} perplexities")
    ppl = [math.nan] * len(texts) if ppl is None else [float(p) for p in ppl]
    return pd.DataFrame({
        "ppl": ppl,
        "distinct_1": [distinct_n(t, 1) for t in texts],
        "distinct_2": [distinct_n(t, 2) for t in texts],
        "compression_ratio": [compression_ratio(t) for t in texts],
        "degenerate": [is_degenerate(t, p, **degenerate_kwargs) for t, p in zip(texts, ppl)],
    }, columns=["ppl", "distinct_1", "distinct_2", "compression_ratio", "degenerate"])
