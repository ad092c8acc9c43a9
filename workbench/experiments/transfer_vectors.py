"""Carrying a source model's vectors to a target model's layers, for the transfer experiment:
linear maps per matched layer pair (fitted or loaded, refused for unequal widths without one),
the carried direction and z-bar, and the raw norm that `add` uses.

    maps = transfer_maps(run, source, target, texts, cfg, layer_pairs)   # None for equal widths
    carried = carry(vec, target, layer_pairs, maps, target_acts)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import workbench as wb
from workbench.analysis.linear_map import LinearMap, load_linear_map
from workbench.analysis.model_map import fit_model_maps
from workbench.cache import PairActivations
from workbench.derivation import carry_directions
from workbench.experiments.rundir import RunDir
from workbench.models import model_info
from workbench.types import LayerPair, Model

if TYPE_CHECKING:
    from workbench.experiments.transfer import TransferConfig


def _map_name(pair: LayerPair) -> str:
    return f"src{pair.source}_tgt{pair.target}"


def transfer_maps(
    run: RunDir, source: Model, target: Model, texts: list[str], cfg: TransferConfig, layer_pairs: list[LayerPair]
) -> dict[LayerPair, LinearMap] | None:
    """Linear maps per (source layer, target layer), or None for equal widths; refused when the
    widths differ and no map is given or fitted."""
    if source.cfg.d_model == target.cfg.d_model:
        return None
    if not (cfg.fit_map or cfg.linear_map):
        raise ValueError(
            f"cannot steer {model_info(target).name!r} (d_model {target.cfg.d_model}) with vectors "
            f"of {model_info(source).name!r} (d_model {source.cfg.d_model}): the widths differ. "
            f"Fix: fit a linear map between their residual streams (fit_map=True, --fit-map) or "
            f"give one (linear_map=DIR, --linear-map DIR, maps saved as src{{s}}_tgt{{t}})"
        )
    if cfg.linear_map:
        where = Path(cfg.linear_map)
        missing = [_map_name(p) for p in layer_pairs if not (where / f"{_map_name(p)}.json").exists()]
        if missing:
            raise ValueError(
                f"{where} lacks the maps {missing}. Fix: save one per matched layer pair "
                f"with workbench.analysis.save_linear_map, or pass fit_map=True"
            )
        return {p: load_linear_map(where / _map_name(p)) for p in layer_pairs}
    todo = [p for p in layer_pairs if not (run.path / "maps" / f"{_map_name(p)}.json").exists()]
    if todo:  # the same neutral texts through both models, positions aligned on characters
        fit = fit_model_maps(
            source,
            target,
            texts,
            target_layers=[p.target for p in todo],
            methods=(cfg.map_method,),
            alpha=cfg.map_alpha,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            show_progress=False,
        )
        fit.save(run.path / "maps", method=cfg.map_method)
    maps = {p: load_linear_map(run.path / "maps" / _map_name(p)) for p in layer_pairs}
    run.record(
        "linear_maps",
        [
            dict(
                source_layer=p.source,
                target_layer=p.target,
                method=m.method,
                r2_heldout=m.r2_heldout,
                n_train=m.n_train,
            )
            for p, m in maps.items()
        ],
    )
    return maps


def carry(
    vec: wb.SteeringVector,
    target: Model,
    layer_pairs: list[LayerPair],
    maps: dict[LayerPair, LinearMap] | None,
    target_acts: PairActivations | None = None,
) -> wb.SteeringVector:
    """`vec` as a vector of the target's layers (the targets of `layer_pairs`): the direction of
    each pair's source layer, mapped when `maps` are given, unit norm; z-bar from `target_acts`
    (the target's PairActivations of the same pairs) when given, else the source's."""
    info = model_info(target)
    carried = carry_directions(
        vec,
        layer_pairs,
        (lambda source, target, d: maps[LayerPair(source, target)].apply_direction(d)) if maps else None,
        target_acts,
        meta=dict(
            carried_to=dict(
                model=info.name,
                weight_hash=info.weight_hash,
                layer_pairs=[p._asdict() for p in layer_pairs],
                mapped=maps is not None,
                z_bar_from="target" if target_acts is not None else "source",
            )
        ),
    )
    return replace(carried, norms=carried_norms(vec, layer_pairs, maps))


def carried_norms(
    vec: wb.SteeringVector, layer_pairs: list[LayerPair], maps: dict[LayerPair, LinearMap] | None
) -> torch.Tensor:
    """Per layer pair, the norm of the source's raw vector at the source layer, mapped to the
    target's width when `maps` are given: what `add` at strength 1 adds, as for a vector of the
    target's own."""
    norms = []
    for pair in layer_pairs:
        i = vec.layers.index(pair.source)
        raw = vec.direction(pair.source).float() * vec.norms[i].float()
        norms.append(maps[pair].apply_direction(raw).norm() if maps else raw.norm())
    return torch.stack(norms).float()
