"""What a steering vector promotes: its direction read out through the final norm and unembedding.

    lens = A.logit_lens(model, vec, k=10)                   # layer, side, rank, token, token_id, logit
    P.logit_lens(lens[lens.layer.isin([12, 26])])
    A.logit_lens(model, vec, baseline=acts)                 # the change it makes to the mean prompt
    per = A.difference_logit_lens(model, acts, layers=[26]) # per-example differences, same columns + example
    A.lens_agreement(per)                                   # how many examples share each top token

What "through the final norm" means for a direction (the choice made here, `baseline=None`):
the unit direction u is scaled to RMS 1 (norm √d_model) and passed through the model's own
final-norm module, minus that module's output for a zero vector; the result goes through the
unembedding matrix W_U without its bias. For RMSNorm (Llama, SmolLM2, Gemma) that is exactly
g ⊙ u·√d (the norm's gain, Gemma's 1 + w included; no centring, eps negligible at RMS 1); for
LayerNorm it also centres u and drops the bias. The biases are dropped because they do not move
with the direction. A direction has no scale of its own, so the logits are those of a normalised
residual made of the direction alone; only their order and their relative size mean something.

With `baseline=acts` (a PairActivations) the readout is instead a difference of two real
logit-lens predictions: lens(x̄ + s·u) − lens(x̄), where x̄ is the mean *without*-instruction
activation of that layer and s the mean projection gap (with − without) on u, i.e. how far the
instruction moves the average prompt along u. This keeps the residual's real size, so the norm's
division by RMS(x̄ + s·u) is included: tokens the mean prompt already predicts are pushed down a
little as the RMS grows. Use it to ask "what does this shift change in the prediction of a typical
prompt", and the plain readout to ask "which tokens does the direction point at".

The lens skips the layers after the read-out point (it is a logit *lens*): at early layers the
tokens are often unrelated to what steering there does. Ties and a model's final logit
soft-capping (monotone) do not change the ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from workbench.analysis._tensors import PerLayer, pair_tensors, per_layer_rows, unit
from workbench.cache import PairActivations

if TYPE_CHECKING:
    from workbench.types import Model

SIDES = ("top", "bottom")


@torch.no_grad()
def direction_logits(model: Model, directions: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_vocab"]:
    """The logit readout of each row's unit direction (see the module docstring): W_U of
    (final_norm(√d·u) − final_norm(0)). Rows of zero norm read out zeros."""
    u = unit(directions.float())
    return _unembed(model, _norm(model, u * math.sqrt(u.shape[-1])) - _norm(model, torch.zeros_like(u)))


@torch.no_grad()
def lens_logits(model: Model, resid: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_vocab"]:
    """The plain logit lens of residual-stream states: W_U of final_norm(resid), without the
    unembedding bias (a constant per token, which cancels in any difference)."""
    return _unembed(model, _norm(model, resid.float()))


def _norm(model: Model, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_model"]:
    param = next(model.ln_final.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (x.device, x.dtype)
    normed: Tensor = model.ln_final(x.to(device=device, dtype=dtype)).float()
    return normed


def _unembed(model: Model, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_vocab"]:
    w_u = model.W_U  # (d_model, d_vocab)
    logits: Tensor = (x.to(device=w_u.device, dtype=w_u.dtype) @ w_u).float().cpu()
    return logits


def logit_lens(
    model: Model,
    vec: PerLayer,
    layers: Sequence[int] | None = None,
    *,
    k: int = 10,
    baseline: PairActivations | None = None,
) -> pd.DataFrame:
    """Top and bottom `k` tokens of each layer's direction of `vec` (a SteeringVector, or a
    (n_layers, d_model) tensor with `layers`).

    Returns one row per (layer, side, rank): columns `layer, side, rank, token, token_id, logit`,
    `side` "top" (promoted; rank 1 = highest logit) or "bottom" (suppressed; rank 1 = lowest).
    `baseline`: None for the direction alone, or the PairActivations the vector came from (or
    held-out ones) for the change lens(x̄ + s·u) − lens(x̄) on the mean prompt (module docstring).
    """
    rows, layers = per_layer_rows(vec, layers, "vec")
    _check_width(model, rows)
    if baseline is None:
        logits = direction_logits(model, rows)
    else:
        with_acts, without_acts, _ = pair_tensors(baseline, layers=layers, name="baseline")
        u = unit(rows)
        mean = without_acts.mean(0)  # (L, d)
        gap = torch.einsum("nld,ld->l", with_acts - without_acts, u) / len(with_acts)
        logits = lens_logits(model, mean + gap[:, None] * u) - lens_logits(model, mean)
    return _top_bottom(model, logits, k, dict(layer=layers))


def difference_logit_lens(
    model: Model, acts: PairActivations, layers: Sequence[int] | None = None, *, k: int = 10
) -> pd.DataFrame:
    """The readout of every per-example difference (with − without) of `acts` (a PairActivations),
    at `layers` (default: all of its layers). Columns as `logit_lens` plus `example` (the pair's
    index in `acts`). Summarise with `lens_agreement`."""
    with_acts, without_acts, layers = pair_tensors(acts, layers=layers, name="acts")
    _check_width(model, with_acts)
    n = len(with_acts)
    # one row per (layer, example), layer-major, as the keys below
    logits = direction_logits(model, rearrange(with_acts - without_acts, "n l d -> (l n) d"))
    keys = dict(layer=np.repeat(layers, n), example=np.tile(np.arange(n), len(layers)))
    return _top_bottom(model, logits, k, keys)


def lens_agreement(df: pd.DataFrame, top: int | None = None) -> pd.DataFrame:
    """For a `difference_logit_lens` frame: per layer and side, in how many examples' top-k each
    token appears. Columns `layer, side, token, token_id, n_examples, share, mean_rank`, most
    shared first; `top` keeps that many tokens per layer and side."""
    n = df.groupby("layer")["example"].nunique().rename("n_total")
    out = (
        df.groupby(["layer", "side", "token_id", "token"], sort=False)
        .agg(n_examples=("example", "nunique"), mean_rank=("rank", "mean"))
        .reset_index()
        .merge(n, left_on="layer", right_index=True)
    )
    out["share"] = out["n_examples"] / out["n_total"]
    out = out.sort_values(
        ["layer", "side", "n_examples", "mean_rank"], ascending=[True, True, False, True], kind="stable"
    )
    if top is not None:
        out = out.groupby(["layer", "side"], sort=False).head(top)
    cols = ["layer", "side", "token", "token_id", "n_examples", "share", "mean_rank"]
    return out[cols].reset_index(drop=True)


def _check_width(model: Model, x: Tensor) -> None:
    if x.shape[-1] != model.cfg.d_model:
        raise ValueError(
            f"width {x.shape[-1]} does not match the model's d_model {model.cfg.d_model}. "
            f"Fix: read a vector out through the model it was derived on"
        )


def _top_bottom(
    model: Model, logits: Float[Tensor, "n d_vocab"], k: int, keys: Mapping[str, Sequence[Any] | np.ndarray]
) -> pd.DataFrame:
    """Tidy top-k and bottom-k of each row of `logits`; `keys` are per-row columns."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    k = min(k, logits.shape[-1])
    n = logits.shape[0]
    frames = []
    for side, largest in zip(SIDES, (True, False)):
        values, ids = logits.topk(k, dim=-1, largest=largest)  # sorted: rank 1 first
        frame: dict[str, Any] = {name: np.repeat(np.asarray(v), k) for name, v in keys.items()}
        frame.update(
            side=side,
            rank=np.tile(np.arange(1, k + 1), n),
            token_id=ids.reshape(-1).numpy(),
            logit=values.reshape(-1).numpy(),
        )
        frames.append(pd.DataFrame(frame))
    out = pd.concat(frames, ignore_index=True)
    order = [*keys, "side", "rank"]
    out["side"] = pd.Categorical(out["side"], categories=SIDES, ordered=True)
    out = out.sort_values(order, kind="stable").reset_index(drop=True)
    out["side"] = out["side"].astype(str)
    out.insert(len(keys) + 2, "token", decode_tokens(model, out["token_id"]))
    return out[[*keys, "side", "rank", "token", "token_id", "logit"]]


def decode_tokens(model: Model, ids: Iterable[int]) -> list[str]:
    """Each token id decoded on its own (" the", not "Ġthe")."""
    tok = model.tokenizer
    cache: dict[int, str] = {}
    return [cache.setdefault(int(i), tok.decode([int(i)])) for i in ids]
