"""Linear maps between two models' residual streams, fitted on the same neutral text.

    texts = wb.base_queries()[:300]
    fit = fit_model_maps(smollm, gemma, texts)          # every target layer, ridge and Procrustes
    fit.table                                           # src_layer, tgt_layer, method, r2_heldout, ...
    fit.save("maps/smollm2_to_gemma")                   # for TransferConfig(linear_map=...)
    mapped = fit.map_vector(vec_smollm, method="ridge") # a SteeringVector in Gemma's space

The two tokenizers cut the text differently, so the activations are paired where both models
have read exactly the same characters: the tokens of each tokenization that end at the same
character offset (`aligned_positions`; word ends, mostly). Layers are paired at matched relative
depth (`matched_layers`). Every text is read alone, in each model's own raw-text convention
(BOS first for models whose prompt format asks for it). Held-out R² holds out whole texts, so
positions of one text never sit on both sides of the split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from workbench.analysis.linear_map import LinearMap, fit_linear_map, save_linear_map
from workbench.analysis.transfer import matched_layers
from workbench.cache import _run_batch, hook_name
from workbench.models import model_info
from workbench.prompts import default_format
from workbench.runs import batched, progress


def aligned_positions(tok_a, tok_b, text: str) -> tuple[list[int], list[int]]:
    """Indices of the tokens of `text` (no special tokens) in tokenizations a and b that end at the
    same character offset, in order: after those tokens both models have read the same prefix."""
    ends_a, ends_b = _token_ends(tok_a, text), _token_ends(tok_b, text)
    common = sorted(set(ends_a) & set(ends_b))
    return [ends_a[e] for e in common], [ends_b[e] for e in common]


def _token_ends(tok, text: str) -> dict[int, int]:
    """{character offset: index of the last token that ends there} (a character split over
    several byte tokens is read in full only after the last of them)."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return {end: i for i, (_, end) in enumerate(enc["offset_mapping"]) if end > 0}


@dataclass
class ModelMaps:
    """Fitted maps per (source layer, target layer) and method, and their table."""

    maps: dict[tuple[str, int, int], LinearMap]
    table: pd.DataFrame
    provenance: dict = field(default_factory=dict)

    def get(self, tgt_layer: int, method: str = "ridge") -> LinearMap:
        for (m, _, t), lm in self.maps.items():
            if m == method and t == tgt_layer:
                return lm
        raise KeyError(f"no {method} map into target layer {tgt_layer}; fitted: {sorted({t for _, _, t in self.maps})}")

    def map_vector(self, vector, method: str = "ridge", target=None):
        """The source vector's per-layer directions carried into the target's layers (one per
        fitted target layer, from its matched source layer), as a SteeringVector of the target
        width. z-bar is unknown (NaN: mode "adjust" refuses it) unless `target` activations are
        given as a PairActivations of the target model, whose mean projections on each mapped
        direction become z-bar (with and without the instruction; the rule of the transfer
        experiment)."""
        from workbench.vectors import carry_directions

        pairs = sorted((t, self.get(t, method).provenance["src_layer"]) for m, _, t in self.maps if m == method)
        if not pairs:
            raise ValueError(f"no {method} maps fitted; methods: {sorted({m for m, _, _ in self.maps})}")
        return carry_directions(
            vector,
            pairs,
            lambda s, t, d: self.get(t, method).apply_direction(d),
            target,
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
        for (m, s, t), lm in self.maps.items():
            if m == method:
                save_linear_map(lm, directory / f"src{s}_tgt{t}")
        return directory


@torch.no_grad()
def paired_residuals(
    source,
    target,
    texts: Sequence[str],
    layer_pairs: Sequence[tuple[int, int]],
    *,
    batch_size: int = 16,
    show_progress: bool | None = None,
) -> tuple[dict[tuple[int, int], tuple[Tensor, Tensor]], Tensor]:
    """Residual streams (resid_post) of both models at the aligned positions of every text:
    {(s, t): (X (n, d_src), Y (n, d_tgt))} and the text index of every row."""
    if not texts:
        raise ValueError("no texts: give the shared neutral text to fit on")
    ids_s, ids_t, read_s, read_t, groups = [], [], [], [], []
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
    src_layers = sorted({s for s, _ in layer_pairs})
    tgt_layers = sorted({t for _, t in layer_pairs})
    xs = _read(source, ids_s, read_s, src_layers, batch_size, show_progress)
    ys = _read(target, ids_t, read_t, tgt_layers, batch_size, show_progress)
    out = {(s, t): (xs[:, src_layers.index(s)], ys[:, tgt_layers.index(t)]) for s, t in layer_pairs}
    return out, torch.tensor(groups)


def _read(model, ids, read, layers, batch_size, show_progress) -> Tensor:
    names = [hook_name(model, "resid_post", l) for l in layers]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    got: dict[int, Tensor] = {}
    for index in progress(list(batched(order, batch_size)), "reading", show_progress):
        got.update(
            zip(index, _run_batch(model, [ids[i] for i in index], [read[i] for i in index], names, reduce_mean=False))
        )
    return torch.cat([got[i] for i in range(len(ids))]).float()  # (positions, layers, d)


def fit_model_maps(
    source,
    target,
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
        (s, t) for s, t in _target_matched(si.n_layers, ti.n_layers) if target_layers is None or t in target_layers
    ]
    data, groups = paired_residuals(source, target, texts, pairs, batch_size=batch_size, show_progress=show_progress)
    maps, rows = {}, []
    for (s, t), (x, y) in data.items():
        for method in methods:
            lm = fit_linear_map(x, y, method=method, alpha=alpha, test_fraction=test_fraction, seed=seed, groups=groups)
            lm.provenance.update(
                source=si.name, target=ti.name, src_layer=s, tgt_layer=t, n_texts=len(set(groups.tolist()))
            )
            maps[(method, s, t)] = lm
            rows.append(
                dict(
                    src_layer=s,
                    tgt_layer=t,
                    depth=t / max(ti.n_layers - 1, 1),
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


def _target_matched(n_src: int, n_tgt: int) -> list[tuple[int, int]]:
    """One source layer for every target layer: the one at the nearest relative depth."""
    return [(t2s, t) for t, t2s in matched_layers(n_tgt, n_src)]
