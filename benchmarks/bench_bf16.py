"""Benchmark 5: bfloat16 against float32 on this CPU, speed and agreement (issue 14).

One process loads SmolLM2 twice, `wb.load_model(MODEL)` and `wb.load_model(MODEL,
dtype=torch.bfloat16)`, and uses the float32 lowercase vector (bench_generate.vector) for both.

  speed       wb.generate_table steered (`adjust` at layer 12, all positions; default path, the
              unbridged twin) on 32 prompts x 64 new tokens in one batch, greedy, EOS off, and
              wb.cache_pairs on the vector's 32 training pairs at layers 6/12/18/24; fp32 and
              bf16 in turn, the order rotating (common.interleave), median of 3
  tokens      the greedy tokens of both dtypes, steered (from the timed runs) and unsteered (one
              run each): rows identical, the first position where a row's tokens differ (64 when
              they never do), the share of generated tokens before that first difference
  activations the cached residuals of both dtypes (last prompt token): relative error
              |bf16 - fp32| / |fp32| per prompt and layer; the mean-difference vectors derived
              from each: cosine of the directions, relative difference of z-bar

    .venv/bin/python -m benchmarks.bench_bf16 run [--quick]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from benchmarks import common
from benchmarks.bench_generate import INSTRUCTION, LAYER, MODEL, SWEEP_LAYERS, no_eos, vector


def sizes(quick: bool) -> dict:
    if quick:
        return dict(n_train=8, n_prompts=4, new_tokens=8, reps=3)
    return dict(n_train=32, n_prompts=32, new_tokens=64, reps=3)


def first_difference(a: list[int], b: list[int]) -> int:
    """Index of the first differing token; the common length when one is a prefix of the other."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def agreement(ref: list[list[int]], other: list[list[int]], new_tokens: int) -> dict:
    firsts = [first_difference(a, b) for a, b in zip(ref, other)]
    total = sum(len(r) for r in ref)
    return dict(
        rows=len(ref),
        rows_identical=sum(a == b for a, b in zip(ref, other)),
        first_difference_median=common.median(firsts),
        first_difference=firsts,
        share_before_first_difference=sum(firsts) / total,
        share_same_position=sum(x == y for a, b in zip(ref, other) for x, y in zip(a, b)) / total,
        new_tokens=new_tokens,
    )


def run(quick: bool) -> dict:
    import workbench as wb

    cfg = sizes(quick)
    T = cfg["new_tokens"]
    models = {"fp32": wb.load_model(MODEL), "bf16": wb.load_model(MODEL, dtype=torch.bfloat16)}
    vec = vector(models["fp32"], cfg["n_train"])
    spec = wb.Steering(vec, layer=LAYER, mode="adjust", weight=1.0, positions="all")
    prompts = wb.base_queries()[: cfg["n_prompts"]]
    pairs = wb.instruction_pairs(wb.base_queries()[100 : 100 + cfg["n_train"]], INSTRUCTION)
    layers = list(SWEEP_LAYERS)
    tokens: dict[str, list[list[int]]] = {}
    acts = {}

    def gen(dtype, steering, key):
        def go():
            t = wb.generate_table(
                models[dtype],
                prompts,
                steering=steering,
                max_new_tokens=T,
                batch_size=len(prompts),
                show_progress=False,
            )
            tokens[key] = [list(r) for r in t["token_ids"]]

        return go

    def cache(dtype):
        def go():
            acts[dtype] = wb.cache_pairs(models[dtype], pairs, layers=layers, position="last", show_progress=False)

        return go

    candidates = {
        "generate_fp32": gen("fp32", [spec], "steered_fp32"),
        "generate_bf16": gen("bf16", [spec], "steered_bf16"),
        "cache_fp32": cache("fp32"),
        "cache_bf16": cache("bf16"),
    }
    with no_eos(models["fp32"]), no_eos(models["bf16"]):
        for m in models.values():  # warm-up (and each model's stack check)
            wb.generate_table(m, prompts[:2], steering=[spec], max_new_tokens=2, show_progress=False)
            wb.cache_pairs(m, pairs[:2], layers=layers, show_progress=False)
        times = common.interleave(candidates, reps=cfg["reps"], warmup=0, log=common.log)
        gen("fp32", None, "plain_fp32")()
        gen("bf16", None, "plain_bf16")()
    twin_used = {k: _twin_used(m) for k, m in models.items()}

    a32, a16 = acts["fp32"], acts["bf16"]
    rel = {}
    for side in ("with_instruction", "without_instruction"):
        x32, x16 = getattr(a32, side).float(), getattr(a16, side).float()  # (n, layers, d)
        rel[side] = (x16 - x32).norm(dim=-1) / x32.norm(dim=-1)
    rel_all = torch.cat([rel["with_instruction"], rel["without_instruction"]])  # (2n, layers)
    v32, v16 = wb.derive(a32, "mean_diff"), wb.derive(a16, "mean_diff")
    per_layer = {}
    for i, layer in enumerate(layers):
        d32, d16 = v32.direction(layer).float(), v16.direction(layer).float()
        z32, z16 = float(v32.z_bar(layer)), float(v16.z_bar(layer))
        per_layer[str(layer)] = dict(
            residual_rel_error_median=float(rel_all[:, i].median()),
            residual_rel_error_max=float(rel_all[:, i].max()),
            direction_cosine=float(d32 @ d16 / (d32.norm() * d16.norm())),
            z_bar_fp32=z32,
            z_bar_bf16=z16,
            # z-bar can sit near 0, so its shift is measured against the spread of the
            # projections it summarises (fp32, prompts with the instruction)
            z_bar_shift_over_projection_std=abs(z16 - z32) / float((a32.with_instruction[:, i].float() @ d32).std()),
        )
    return dict(
        n_prompts=len(prompts),
        new_tokens=T,
        spec=spec.describe(),
        n_pairs=len(pairs),
        layers=layers,
        reps=cfg["reps"],
        twin_used=twin_used,
        avx512_bf16="avx512_bf16" in open("/proc/cpuinfo").read(),
        seconds=times.summary(),
        tokens_per_s={k: len(prompts) * T / common.median(times.wall[k]) for k in ("generate_fp32", "generate_bf16")},
        speedup_generate_bf16_vs_fp32=times.ratio("generate_fp32", "generate_bf16"),
        speedup_cache_bf16_vs_fp32=times.ratio("cache_fp32", "cache_bf16"),
        tokens=dict(
            steered=agreement(tokens["steered_fp32"], tokens["steered_bf16"], T),
            unsteered=agreement(tokens["plain_fp32"], tokens["plain_bf16"], T),
        ),
        activations=per_layer,
    )


def _twin_used(model) -> bool:
    """Whether the model has an unbridged twin, which generation uses when no hooks are on it."""
    from workbench.twin import twin

    return twin(model) is not None and not model.list_hooks()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["run"])
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    common.resume_or_start()
    common.emit(run(a.quick))


if __name__ == "__main__":
    main()
