"""Linear maps between two models' residual streams, fitted on the same neutral text.

    texts = wb.base_queries()[:300]
    fit = fit_model_maps(smollm, gemma, texts)          # every target layer, ridge and Procrustes
    fit.table                                           # src_layer, tgt_layer, method, r2_heldout, ...
    fit.save("maps/smollm2_to_gemma")                   # for TransferConfig(linear_map=...)
    mapped = fit.map_vector(vec_smollm, method="ridge") # a SteeringVector in Gemma's space
    mapped = fit.map_vector(vec_smollm, target_acts=gemma_acts)   # z-bar from Gemma's activations

The two tokenizers cut the text differently, so the activations are paired where both models
have read exactly the same characters: the tokens of each tokenization that end at the same
character offset (`aligned_positions`; word ends, mostly). Layers are paired at matched relative
depth (`target_matched_layers`: one source layer per target layer). Every text is read alone, in each model's own raw-text convention
(BOS first for models whose prompt format asks for it). Held-out R² holds out whole texts, so
positions of one text never sit on both sides of the split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.analysis.linear_map import LinearMap, fit_linear_map, save_linear_map
from workbench.analysis.transfer import target_matched_layers
from workbench.cache import PairActivations
from workbench.derivation import carry_directions
from workbench.models import model_info
from workbench.prompts import default_format
from workbench.reading import hook_name, read_batch
from workbench.runs import batched, progress
from workbench.types import LayerPair
from workbench.vectors import SteeringVector

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from workbench.types import Model

# the activations of one layer pair at the aligned positions: X (source), Y (target)
Paired = tuple[Float[Tensor, "n d_source"], Float[Tensor, "n d_target"]]


def aligned_positions(
    tok_a: PreTrainedTokenizerBase, tok_b: PreTrainedTokenizerBase, text: str
) -> tuple[list[int], list[int]]:
    """Indices of the tokens of `text` (no special tokens) in tokenizations a and b that end at the
    same character offset, in order: after those tokens both models have read the same prefix."""
    ends_a, ends_b = _token_ends(tok_a, text), _token_ends(tok_b, text)
    common = sorted(set(ends_a) & set(ends_b))
    return [ends_a[e] for e in common], [ends_b[e] for e in common]


def _token_ends(tok: PreTrainedTokenizerBase, text: str) -> dict[int, int]:
    """{character offset: index of the last token that ends there} (a character split over
    several byte tokens is read in full only after the last of them)."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return {end: i for i, (_, end) in enumerate(enc["offset_mapping"]) if end > 0}


@dataclass
class ModelMaps:
    """Fitted maps per method and (source layer, target layer), and their table."""

    maps: dict[tuple[str, LayerPair], LinearMap]
    table: pd.DataFrame
    provenance: dict[str, Any] = field(default_factory=dict)

    def get(self, target_layer: int, method: str = "ridge") -> LinearMap:
        """The `method` map into `target_layer` (from its matched source layer)."""
        for (m, pair), lm in self.maps.items():
            if m == method and pair.target == target_layer:
                return lm
        fitted = sorted({pair.target for _, pair in self.maps})
        raise KeyError(f"no {method} map into target layer {target_layer}; fitted: {fitted}")

    def map_vector(
        self, vector: SteeringVector, method: str = "ridge", *, target_acts: PairActivations | None = None
    ) -> SteeringVector:
        """The source vector's per-layer directions carried into the target's layers (one per
        fitted target layer, from its matched source layer), as a SteeringVector of the target
        width. z-bar is unknown (NaN: mode "adjust" refuses it) unless `target_acts`, a
        PairActivations of the target model, are given: their mean projections on each mapped
        direction become z-bar (with and without the instruction; the rule of the transfer
        experiment)."""
        pairs = sorted((pair for m, pair in self.maps if m == method), key=lambda pair: pair.target)
        if not pairs:
            raise ValueError(f"no {method} maps fitted; methods: {sorted({m for m, _ in self.maps})}")
        return carry_directions(
            vector,
            pairs,
            lambda source, target, d: self.maps[(method, LayerPair(source, target))].apply_direction(d),
            target_acts,
            z_from_source=False,
            meta=dict(
                model=self.provenance["target"],
                weight_hash=self.provenance["target_hash"],
                mapped_from=vector.meta.get("model"),
                map_method=method,
            ),
        )

    def save(self, directory: str | Path, method: str = "ridge") -> Path:
        """Save the `method` maps as src{s}_tgt{t}, the layout TransferConfig(linear_map=...) reads."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for (m, pair), lm in self.maps.items():
            if m == method:
                save_linear_map(lm, directory / f"src{pair.source}_tgt{pair.target}")
        return directory


@torch.no_grad()
def paired_residuals(
    source: Model,
    target: Model,
    texts: Sequence[str],
    layer_pairs: Sequence[LayerPair],
    *,
    batch_size: int = 16,
    show_progress: bool | None = None,
) -> tuple[dict[LayerPair, Paired], Int[Tensor, " n"]]:
    """Residual streams (resid_post) of both models at the aligned positions of every text:
    {(source layer, target layer): (X (n, d_source), Y (n, d_target))} and the text index of
    every row."""
    if not texts:
        raise ValueError("no texts: give the shared neutral text to fit on")
    pairs = [LayerPair(*pair) for pair in layer_pairs]
    ids_s: list[list[int]] = []
    ids_t: list[list[int]] = []
    read_s: list[list[int]] = []
    read_t: list[list[int]] = []
    groups: list[int] = []
    for k, text in enumerate(texts):
        a, b = aligned_positions(source.tokenizer, target.tokenizer, text)
        if not a:
            continue
        for model, ids, read, idx in ((source, ids_s, read_s, a), (target, ids_t, read_t, b)):
            row = model.tokenizer(text, add_special_tokens=False)["input_ids"]
            bos = default_format(model).add_bos and model.tokenizer.bos_token_id is not None
            ids.append([model.tokenizer.bos_token_id] * bos + row)
            read.append([i + bos for i in idx])
        groups += [k] * len(a)
    if not ids_s:
        raise ValueError("no token boundaries are shared by the two tokenizations of these texts")
    src_layers = sorted({p.source for p in pairs})
    tgt_layers = sorted({p.target for p in pairs})
    xs = _read(source, ids_s, read_s, src_layers, batch_size, show_progress)
    ys = _read(target, ids_t, read_t, tgt_layers, batch_size, show_progress)
    out = {p: (xs[:, src_layers.index(p.source)], ys[:, tgt_layers.index(p.target)]) for p in pairs}
    return out, torch.tensor(groups)


def _read(
    model: Model,
    ids: list[list[int]],
    read: list[list[int]],
    layers: list[int],
    batch_size: int,
    show_progress: bool | None,
) -> Float[Tensor, "positions n_layers d_model"]:
    names = [hook_name(model, "resid_post", layer) for layer in layers]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    got: dict[int, Tensor] = {}
    for index in progress(list(batched(order, batch_size)), "reading", show_progress):
        got.update(zip(index, read_batch(model, [ids[i] for i in index], [read[i] for i in index], names), strict=True))
    return torch.cat([got[i] for i in range(len(ids))]).float()


def fit_model_maps(
    source: Model,
    target: Model,
    texts: Sequence[str],
    *,
    target_layers: Sequence[int] | None = None,
    methods: Sequence[str] = ("ridge", "procrustes"),
    alpha: float = 10.0,
    test_fraction: float = 0.2,
    seed: int = 0,
    batch_size: int = 16,
    show_progress: bool | None = None,
) -> ModelMaps:
    """Fit source -> target maps at matched relative depth for every target layer (or
    `target_layers`), by each method; R² on held-out texts."""
    si, ti = model_info(source), model_info(target)
    pairs = [
        p for p in target_matched_layers(si.n_layers, ti.n_layers) if target_layers is None or p.target in target_layers
    ]
    data, groups = paired_residuals(source, target, texts, pairs, batch_size=batch_size, show_progress=show_progress)
    maps: dict[tuple[str, LayerPair], LinearMap] = {}
    rows = []
    for pair, (x, y) in data.items():
        for method in methods:
            lm = fit_linear_map(x, y, method=method, alpha=alpha, test_fraction=test_fraction, seed=seed, groups=groups)
            lm.provenance.update(
                source=si.name,
                target=ti.name,
                src_layer=pair.source,
                tgt_layer=pair.target,
                n_texts=len(set(groups.tolist())),
            )
            maps[(method, pair)] = lm
            rows.append(
                dict(
                    src_layer=pair.source,
                    tgt_layer=pair.target,
                    depth=pair.target / max(ti.n_layers - 1, 1),
                    method=method,
                    r2_heldout=lm.r2_heldout,
                    n_train=lm.n_train,
                    n_test=lm.n_test,
                )
            )
    return ModelMaps(
        maps,
        pd.DataFrame(rows),
        dict(
            source=si.name,
            target=ti.name,
            target_hash=ti.weight_hash,
            source_hash=si.weight_hash,
            n_texts=len(texts),
            alpha=alpha,
        ),
    )
