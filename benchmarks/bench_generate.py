"""Benchmark 3: steered generation on SmolLM2-135M-Instruct.

The vector: wb.cache_pairs on n_train lowercase pairs (base queries 100.., disjoint from the
evaluation prompts) at layers 6, 12, 18, 24, then wb.derive (mean_diff). The evaluation prompts
are the first base queries, formatted by wb.generate with the chat template.

  ref       (a) wb.generate (batch 32, KV cache) vs the paper's way, wb.generate_reference
            (batch 1, no KV cache, the whole sequence recomputed per token), both steered with
            `adjust` at layer 12 on all positions, greedy, real EOS. Rates are generated tokens
            per second; the reference runs in chunks of prompts, each chunk timed between two
            wb.generate repetitions, so each ratio pairs neighbouring measurements. The tokens
            of every prompt that went through the reference are compared (by default the first
            6 of the 32, for time; WB_BENCH_REF_PROMPTS=32 runs all).
  overhead  (b) the same batch of 32 prompts with EOS switched off on every side, so each side
            runs exactly max_new_tokens decode steps for every row and the tokens counted are
            the same work (a fixed-length run: per-token throughput is then wall time alone).
            wb steered, wb unsteered, transformers' own generate on the same (bridged) model
            (`model.original_model.generate`, KV cache, left padding, the formatted prompts
            encoded by wb.prompts.encode), and for context the plain transformers model
            (not bridged) with sdpa attention when `raw` asks (off by default: time).
  sweep     (c) 4 layers x 8 weights of `add` over 4 prompts: one wb.generate_table call with
            a steering list per row (128 rows, batch_size 32) vs 32 wb.generate calls, one per
            configuration over the 4 prompts (batch_size 32, so batches of 4); the same call
            as one batch of all 128 rows (batched_one), and once more with the staged prefill
            and the decode-once of equal rows turned off (batched_one_unshared); and, for the
            before / after of the unbridged twin, the batched call with unbridged=False.
  profile   cProfile of one steered wb.generate batch: where the decode time goes.
  memory    one variant in a fresh process, peak RSS while it runs; the sweep variants run
            one batch (batched) or one call (loop): batches run one after another, so that is
            the whole job's peak.

    .venv/bin/python -m benchmarks.bench_generate ref|overhead|sweep|profile [--quick]
    .venv/bin/python -m benchmarks.bench_generate memory VARIANT [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from benchmarks import common

MODEL = "smollm2-135m-instruct"
INSTRUCTION = "change_case:english_lowercase"
LAYER = 12
SWEEP_LAYERS = (6, 12, 18, 24)
SWEEP_WEIGHTS = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
MEMORY_VARIANTS = (
    "reference",
    "wb_steered",
    "wb_plain",
    "hf_generate",
    "hf_raw_sdpa",
    "sweep_batched",
    "sweep_batched_all",
    "sweep_loop",
)


def sizes(quick: bool) -> dict:
    """ref_prompts: how many of the prompts also go through the batch-1 reference (all 32 x 64
    take ~2,000 forward passes of up to 130 tokens, ~20 min here; WB_BENCH_REF_PROMPTS=32).
    raw: the plain (not bridged) transformers models timed beside HF generate for context."""
    if quick:
        cfg = dict(
            n_train=8,
            n_prompts=4,
            new_tokens=8,
            batch=32,
            ref_prompts=3,
            ref_chunks=3,
            reps=3,
            raw=(),
            sweep_prompts=1,
            sweep_tokens=4,
            sweep_layers=(6, 12),
            sweep_weights=(0.0, 2.0, 4.0, 8.0),
            sweep_bridge=True,
            profile_tokens=4,
        )
    else:
        cfg = dict(
            n_train=32,
            n_prompts=32,
            new_tokens=64,
            batch=32,
            ref_prompts=3,
            ref_chunks=3,
            reps=3,
            raw=(),
            sweep_prompts=4,
            sweep_tokens=32,
            sweep_layers=SWEEP_LAYERS,
            sweep_weights=SWEEP_WEIGHTS,
            sweep_bridge=True,
            profile_tokens=16,
        )
    if os.environ.get("WB_BENCH_REF_PROMPTS"):
        cfg["ref_prompts"] = min(int(os.environ["WB_BENCH_REF_PROMPTS"]), cfg["n_prompts"])
    cfg["ref_chunks"] = min(cfg["ref_chunks"], cfg["ref_prompts"])
    return cfg


# ---------------------------------------------------------------- set-up


@functools.cache  # one model load per process, shared by its benchmarks
def setup(quick: bool):
    import workbench as wb

    cfg = sizes(quick)
    model = wb.load_model(MODEL)
    vec = vector(model, cfg["n_train"])
    prompts = wb.base_queries()[: cfg["n_prompts"]]
    spec = wb.Steering(vec, layer=LAYER, mode="adjust", weight=1.0, positions="all")
    return cfg, model, vec, prompts, spec


def vector(model, n_train: int):
    """The lowercase vector, derived once per benchmark run and shared through a file."""
    import workbench as wb

    tmp = os.environ.get("WB_BENCH_TMP")
    path = Path(tmp) / f"lowercase-{n_train}.safetensors" if tmp else None
    if path is not None and path.exists():
        return wb.SteeringVector.load(path, model=model)
    train = wb.instruction_pairs(wb.base_queries()[100 : 100 + n_train], INSTRUCTION)
    acts = wb.cache_pairs(model, train, layers=list(SWEEP_LAYERS), position="last", show_progress=False)
    vec = wb.derive(acts, "mean_diff")
    if path is not None:
        vec.save(path)
    return vec


def sweep_specs(vec, cfg, positions="all"):
    import workbench as wb

    return [
        wb.Steering(vec, layer=l, mode="add", weight=w, positions=positions)
        for l in cfg["sweep_layers"]
        for w in cfg["sweep_weights"]
    ]


@contextlib.contextmanager
def no_eos(model):
    """EOS off for wb.generate (its eos_ids) and for transformers' generate (generation_config;
    passing eos_token_id=None to generate does not work: None is filled from the model's config)."""
    from unittest import mock

    gc = model.original_model.generation_config
    saved = gc.eos_token_id
    gc.eos_token_id = None
    try:
        with mock.patch("workbench.generation.eos_ids", lambda m: set()):
            yield
    finally:
        gc.eos_token_id = saved


def padded(model, prompts):
    """The formatted prompts, encoded by wb.prompts.encode and left padded like wb.generate."""
    from workbench.prompts import default_format, encode

    fmt = default_format(model)
    ids = encode(model.tokenizer, fmt.apply_all(model.tokenizer, list(prompts)), fmt)
    width = max(len(r) for r in ids)
    pad = model.tokenizer.pad_token_id or 0
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in ids])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids])
    return input_ids, mask


def hf_generate(hf, input_ids, mask, new_tokens: int, pad_id: int) -> torch.Tensor:
    with torch.no_grad():
        out = hf.generate(
            input_ids=input_ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens, pad_token_id=pad_id
        )
    return out[:, input_ids.shape[1] :]


def load_raw(attn: str):
    from transformers import AutoModelForCausalLM

    import workbench as wb

    directory = wb.weights.cache_dir(wb.weights.BUNDLED[MODEL])
    m = AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, attn_implementation=attn, local_files_only=True
    )
    m.generation_config.eos_token_id = None  # this copy only ever runs fixed-length
    return m.eval()


# ---------------------------------------------------------------- (a) vs the reference


def run_ref(quick: bool) -> dict:
    import workbench as wb

    cfg, model, _vec, prompts, spec = setup(quick)
    T = cfg["new_tokens"]

    def fast():
        nonlocal table
        table = wb.generate_table(
            model, prompts, steering=[spec], max_new_tokens=T, batch_size=cfg["batch"], show_progress=False
        )

    wb.generate(model, prompts[:2], steering=[spec], max_new_tokens=4, show_progress=False)
    wb.generate_reference(model, prompts[0], [spec], max_new_tokens=2)  # warm-up
    table = None
    ref_prompts = list(range(cfg["ref_prompts"]))
    chunks = [ref_prompts[i :: cfg["ref_chunks"]] for i in range(cfg["ref_chunks"])]
    fast_wall, fast_cpu, ref_wall, ref_cpu, ref_n, ref_tokens = [], [], [], [], [], {}

    def timed(fn, wall, cpu):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)

    def reference(chunk):
        for i in chunk:
            ref_tokens[i] = wb.generate_reference(model, prompts[i], [spec], max_new_tokens=T)
        ref_n.append(sum(len(ref_tokens[i]) for i in chunk))

    for c, chunk in enumerate(chunks):
        timed(fast, fast_wall, fast_cpu)
        timed(lambda: reference(chunk), ref_wall, ref_cpu)
        common.log(
            f"  ref chunk {c + 1}/{len(chunks)}: wb {fast_wall[-1]:.2f} s, reference "
            f"{ref_n[-1]} tokens in {ref_wall[-1]:.2f} s ({ref_cpu[-1]:.2f} s cpu)"
        )
    timed(fast, fast_wall, fast_cpu)
    fast_tokens = int(table["n_tokens"].sum())  # the same every run: greedy
    rates = {}
    ratios = {}
    for kind, fw, rw in (("wall", fast_wall, ref_wall), ("cpu", fast_cpu, ref_cpu)):
        fast_rates = [fast_tokens / t for t in fw]
        ref_rates = [n / t for n, t in zip(ref_n, rw)]
        rates[kind] = dict(wb=common.summary(fast_rates), reference=common.summary(ref_rates))
        # each reference chunk against the mean of the wb runs either side of it
        ratios[kind] = common.summary(
            [(fast_rates[c] + fast_rates[c + 1]) / 2 / ref_rates[c] for c in range(len(chunks))]
        )
    identical = sum(tuple(ref_tokens[i]) == tuple(table["token_ids"][i]) for i in ref_prompts)
    first_diff = {}
    for i in ref_prompts:
        a, b = list(ref_tokens[i]), list(table["token_ids"][i])
        if a != b:
            first_diff[i] = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
    return dict(
        n_prompts=len(prompts),
        new_tokens=T,
        batch_size=cfg["batch"],
        spec=spec.describe(),
        wb_tokens=fast_tokens,
        wb_seconds=common.summary(fast_wall),
        reference_prompts=len(ref_prompts),
        reference_chunks=len(chunks),
        reference_tokens=sum(ref_n),
        reference_seconds=common.summary(ref_wall),
        tokens_per_s=rates,
        throughput_ratio_wb_vs_reference=ratios,
        rows_identical=int(identical),
        rows_compared=len(ref_prompts),
        first_differing_token=first_diff,
        finish_reasons=table["finish_reason"].value_counts().to_dict(),
    )


# ---------------------------------------------------------------- (b) overhead vs HF generate


def run_overhead(quick: bool) -> dict:
    import workbench as wb

    cfg, model, _vec, prompts, spec = setup(quick)
    T, B = cfg["new_tokens"], cfg["batch"]
    assert len(prompts) <= B, "one batch: the comparison is per batch"
    input_ids, mask = padded(model, prompts)
    pad = model.tokenizer.pad_token_id or 0
    raws = {f"hf_raw_{attn}": load_raw(attn) for attn in cfg["raw"]}
    out = {}

    def wb_run(steering, key):
        def go():
            t = wb.generate_table(
                model, prompts, steering=steering, max_new_tokens=T, batch_size=B, show_progress=False
            )
            out[key] = [list(r) for r in t["token_ids"]]

        return go

    def hf_run(hf, key):
        def go():
            out[key] = hf_generate(hf, input_ids, mask, T, pad).tolist()

        return go

    candidates = {
        "wb_steered": wb_run([spec], "wb_steered"),
        "wb_plain": wb_run(None, "wb_plain"),
        "hf_generate": hf_run(model.original_model, "hf_generate"),
        **{k: hf_run(m, k) for k, m in raws.items()},
    }
    with no_eos(model):
        # warm-up: a short run of each (first calls pay one-off costs)
        wb.generate(model, prompts[:2], steering=[spec], max_new_tokens=2, show_progress=False)
        for hf in (model.original_model, *raws.values()):
            hf_generate(hf, input_ids[:2], mask[:2], 2, pad)
        times = common.interleave(candidates, reps=cfg["reps"], warmup=0, log=common.log)
    # wb.generate returns prompts in their input order; one batch, so hf's rows match
    n_tokens = {k: sum(len(r) for r in v) for k, v in out.items()}
    assert all(n == len(prompts) * T for n in n_tokens.values()), n_tokens
    same = lambda a, b: sum(x == y for x, y in zip(out[a], out[b]))
    res = dict(
        n_prompts=len(prompts),
        new_tokens=T,
        batch_size=B,
        prompt_width=input_ids.shape[1],
        spec=spec.describe(),
        tokens_per_run=len(prompts) * T,
        seconds=times.summary(),
        tokens_per_s={k: len(prompts) * T / common.median(v) for k, v in times.wall.items()},
        rows_identical={f"wb_plain_vs_{k}": same("wb_plain", k) for k in ["hf_generate", *raws]},
    )
    pairs = [("wb_steered", "hf_generate"), ("wb_plain", "hf_generate"), ("wb_steered", "wb_plain")]
    pairs += [(a, k) for k in raws for a in ("hf_generate", "wb_steered")]
    for a, b in pairs:
        res[f"time_ratio_{a}_over_{b}"] = times.ratio(a, b)
    return res


# ---------------------------------------------------------------- (c) sweep


def run_sweep(quick: bool) -> dict:
    import workbench as wb

    cfg, model, vec, prompts, _ = setup(quick)
    prompts = prompts[: cfg["sweep_prompts"]]
    T, B = cfg["sweep_tokens"], cfg["batch"]
    specs = sweep_specs(vec, cfg)
    rows_prompts = [p for _ in specs for p in prompts]
    rows_specs = [[s] for s in specs for _ in prompts]
    out = {}

    # the same sweep steering only the generated tokens: its rows share one prefill per prompt
    gen_specs = sweep_specs(vec, cfg, "generated")
    gen_rows_specs = [[s] for s in gen_specs for _ in prompts]

    def batched(bs, key, row_specs=rows_specs, **kw):
        def go():
            t = wb.generate_table(
                model, rows_prompts, steering=row_specs, max_new_tokens=T, batch_size=bs, show_progress=False, **kw
            )
            out[key] = [tuple(r) for r in t["token_ids"]]

        return go

    def loop(key="loop", configs=specs):
        def go():
            got = []
            for s in configs:
                t = wb.generate_table(model, prompts, steering=[s], max_new_tokens=T, batch_size=B, show_progress=False)
                got += [tuple(r) for r in t["token_ids"]]
            out[key] = got

        return go

    def without_sharing(go):
        """`go` with the staged prefill and the decode-once of equal rows turned off: what those
        two are worth on the same call."""

        def off():
            from workbench import decoding, generation

            saved = decoding.worth_staging, generation.same_rows
            decoding.worth_staging = lambda *a: False
            generation.same_rows = lambda ids, rows, sampling: list(range(len(ids)))
            try:
                go()
            finally:
                decoding.worth_staging, generation.same_rows = saved

        return off

    whole = len(rows_prompts)  # the whole sweep as one batch
    candidates = {
        "batched": batched(B, "batched"),
        "batched_one": batched(whole, "batched_one"),
        "batched_one_unshared": without_sharing(batched(whole, "batched_one_unshared")),
        "loop": loop(),
        "batched_generated": batched(B, "batched_generated", gen_rows_specs),
        "loop_generated": loop("loop_generated", gen_specs),
    }
    if cfg["sweep_bridge"]:  # the same batched call on the bridged path: before the twin
        candidates["batched_bridge"] = batched(B, "batched_bridge", unbridged=False)
    wb.generate(model, prompts, steering=[specs[-1]], max_new_tokens=2, show_progress=False)
    wb.generate(model, prompts, steering=[specs[-1]], max_new_tokens=2, show_progress=False, unbridged=False)
    times = common.interleave(candidates, reps=cfg["reps"], warmup=0, log=common.log)
    n_tok = sum(len(r) for r in out["loop"])
    same = lambda a, b="loop": sum(x == y for x, y in zip(out[a], out[b]))
    res = dict(
        n_prompts=len(prompts),
        n_configs=len(specs),
        rows=len(rows_prompts),
        new_tokens=T,
        layers=list(cfg["sweep_layers"]),
        weights=list(cfg["sweep_weights"]),
        mode="add",
        batch_size_batched=B,
        batch_size_loop_arg=B,
        batch_rows_loop=len(prompts),
        tokens_loop=n_tok,
        tokens_batched=sum(len(r) for r in out["batched"]),
        seconds=times.summary(),
        speedup_batched_vs_loop=times.ratio("loop", "batched"),
        rows_identical_batched_vs_loop=same("batched"),
        batch_size_one=whole,
        speedup_one_vs_loop=times.ratio("loop", "batched_one"),
        rows_identical_one_vs_loop=same("batched_one"),
        speedup_sharing=times.ratio("batched_one_unshared", "batched_one"),
        rows_identical_one_unshared_vs_loop=same("batched_one_unshared"),
    )
    res["generated"] = dict(
        positions="generated",
        tokens_loop=sum(len(r) for r in out["loop_generated"]),
        tokens_batched=sum(len(r) for r in out["batched_generated"]),
        speedup_batched_vs_loop=times.ratio("loop_generated", "batched_generated"),
        # the same batched work steering every position: what sharing the prefill saves
        speedup_vs_batched_all=times.ratio("batched", "batched_generated"),
        rows_identical_batched_vs_loop=same("batched_generated", "loop_generated"),
    )
    if "batched_bridge" in candidates:
        res["speedup_batched_vs_batched_bridge"] = times.ratio("batched_bridge", "batched")
        res["rows_identical_batched_bridge_vs_loop"] = same("batched_bridge")
    return res


# ---------------------------------------------------------------- profile


def run_profile(quick: bool) -> dict:
    import cProfile
    import pstats

    import workbench as wb

    cfg, model, _vec, prompts, spec = setup(quick)
    T, B = cfg["profile_tokens"], cfg["batch"]
    go = lambda: wb.generate_table(
        model,
        prompts,
        steering=[spec],
        max_new_tokens=T,
        batch_size=B,
        show_progress=False,
    )
    with no_eos(model):
        go()
        prof = cProfile.Profile(time.process_time)  # CPU clock: robust to being descheduled
        t0, c0 = time.perf_counter(), time.process_time()
        prof.enable()
        go()
        prof.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    st = pstats.Stats(prof)
    total = st.total_tt
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _) in st.stats.items():
        rows.append(
            dict(
                func=f"{Path(file).name}:{line}({func})",
                file=file,
                calls=nc,
                tottime=round(tt, 4),
                cumtime=round(ct, 4),
            )
        )
    top_tot = sorted(rows, key=lambda r: -r["tottime"])[:25]
    key_cum = {}
    for r in rows:
        name = r["func"]
        for want in (
            "steering.py",
            "generation.py",
            "hook_points.py",
            "transformer_bridge.py",
            "cache_utils.py",
            "masking_utils.py",
        ):
            if r["file"].endswith(want):
                key_cum[name] = r["cumtime"]
    key_cum = dict(sorted(key_cum.items(), key=lambda kv: -kv[1])[:30])
    return dict(
        n_prompts=len(prompts),
        new_tokens=T,
        timer="process_time",
        wall_under_profiler_s=round(wall, 3),
        cpu_under_profiler_s=round(cpu, 3),
        profiled_total_s=round(total, 3),
        top_tottime=top_tot,
        top_cumtime_selected=key_cum,
    )


# ---------------------------------------------------------------- memory


def run_memory(variant: str, quick: bool) -> dict:
    import workbench as wb

    cfg, model, vec, prompts, spec = setup(quick)
    T, B = cfg["new_tokens"], cfg["batch"]
    pad = model.tokenizer.pad_token_id or 0
    ctx = contextlib.nullcontext()
    if variant == "reference":
        fn = lambda: wb.generate_reference(model, prompts[0], [spec], max_new_tokens=T)
    elif variant in ("wb_steered", "wb_plain"):
        steering = [spec] if variant == "wb_steered" else None
        fn = lambda: wb.generate(
            model,
            prompts,
            steering=steering,
            max_new_tokens=T,
            batch_size=B,
            show_progress=False,
        )
        ctx = no_eos(model)
    elif variant in ("hf_generate", "hf_raw_sdpa"):
        input_ids, mask = padded(model, prompts)
        if variant == "hf_raw_sdpa":
            hf = load_raw("sdpa")
            del model
        else:
            hf = model.original_model
            ctx = no_eos(model)
        fn = lambda: hf_generate(hf, input_ids, mask, T, pad)
    else:
        prompts = prompts[: cfg["sweep_prompts"]]
        specs = sweep_specs(vec, cfg)
        T = cfg["sweep_tokens"]
        # batches run one after another and keep only token ids, so the peak of one batch
        # (one call of the loop) is the peak of the whole job
        if variant == "sweep_loop":
            fn = lambda: wb.generate(
                model,
                prompts,
                steering=[specs[-1]],
                max_new_tokens=T,
                batch_size=B,
                show_progress=False,
            )
        else:
            rows = [(p, s) for s in specs for p in prompts]
            if variant == "sweep_batched":
                rows = rows[:B]
            fn = lambda: wb.generate(
                model,
                [p for p, _ in rows],
                steering=[[s] for _, s in rows],
                max_new_tokens=T,
                batch_size=len(rows),
                show_progress=False,
            )
    with ctx:
        return dict(variant=variant, **common.measure_memory(fn))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["ref", "overhead", "sweep", "profile", "all", "memory"])
    p.add_argument("variant", nargs="?", choices=MEMORY_VARIANTS)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    common.resume_or_start()
    if a.what == "memory":
        common.emit(run_memory(a.variant, a.quick))
    elif a.what == "all":  # one process (one model load) for ref and overhead
        common.emit(dict(ref=run_ref(a.quick), overhead=run_overhead(a.quick)))
    else:
        common.emit(dict(ref=run_ref, overhead=run_overhead, sweep=run_sweep, profile=run_profile)[a.what](a.quick))


if __name__ == "__main__":
    main()
