"""A check of the stack before the first KV-cached generation: cached decoding must give the
logits of the uncached forward pass.

transformers 5.24.0 with TransformerLens 4.3.0 is the case that made this necessary: the bridged
model stopped filling the KV cache, so every cached step saw only its own token and greedy text
went wrong after the first token, silently. `generate` calls `check_kv_cache(model)` once per
model and process (a few forward passes of a few tokens: well under a second on SmolLM2) and
refuses to generate on a stack that fails it.

    wb.check_kv_cache(model)            # raises StackError naming the versions and the fix
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from workbench.types import Model

_CHECKED: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # models that passed, in this process

PREFIX, STEPS = 5, 3  # prefill this many tokens, then decode this many one at a time


class StackError(RuntimeError):
    """The installed libraries do not decode correctly with a KV cache."""


@torch.no_grad()
def check_kv_cache(model: Model, forward: nn.Module | None = None, *, force: bool = False) -> None:
    """Prefill PREFIX tokens into a DynamicCache, decode STEPS tokens one at a time, and compare
    every step's logits and the cache length with one uncached forward pass over the same
    tokens. Raises StackError when they differ. `forward` is the module generation will call
    (the bridge's `original_model` by default, or its unbridged twin). Runs once per module and
    process unless `force`."""
    hf = model.original_model if forward is None else forward
    if hf in _CHECKED and not force:
        return
    from transformers import DynamicCache

    param = next(hf.parameters())
    vocab = min(int(model.cfg.d_vocab), 1000)
    ids = torch.arange(PREFIX + STEPS, device=param.device)[None, :] * 37 % (vocab - 10) + 10
    full = hf(input_ids=ids, use_cache=False).logits[0, PREFIX - 1 :].float()
    cache = DynamicCache()
    cached = [hf(input_ids=ids[:, :PREFIX], past_key_values=cache, use_cache=True).logits[0, -1]]
    for step in range(PREFIX, PREFIX + STEPS - 1):
        cached.append(hf(input_ids=ids[:, step : step + 1], past_key_values=cache, use_cache=True).logits[0, -1])
    got = torch.stack(cached).float()
    length = cache.get_seq_length()
    scale = full.abs().max().clamp(min=1e-6)
    tolerance = 1e-3 if param.dtype == torch.float32 else 3e-2
    error = float((got - full[: len(got)]).abs().max() / scale)
    if length != PREFIX + STEPS - 1 or not error <= tolerance:
        from workbench.models import library_versions

        versions = library_versions()
        raise StackError(
            f"KV-cached decoding is broken on this stack: after {PREFIX + STEPS - 1} tokens the "
            f"cache holds {length}, and cached logits differ from the uncached forward pass by "
            f"{error:.2g} of their scale (tolerance {tolerance:g}). Installed: transformers "
            f"{versions['transformers']}, transformer-lens {versions['transformer-lens']}, torch "
            f"{versions['torch']}. transformers 5.24.0 is known to break TransformerLens 4.3.0's "
            f"bridge this way. Fix: install the locked versions (bash scripts/setup.sh, or "
            f"pip install --no-deps --require-hashes -r requirements.lock; at least "
            f"pip install 'transformers<5.24'). Nothing was generated."
        )
    _CHECKED.add(hf)
