"""Run the benchmarks, write a JSON of the results and the numbers in RESULTS.md.

    .venv/bin/python -m benchmarks.run --suite speed    # issue 14's targets, ~20 min on 2 cores
    .venv/bin/python -m benchmarks.run                  # every benchmark (suite all), ~60 min
    .venv/bin/python -m benchmarks.run --quick          # smaller sizes
    .venv/bin/python -m benchmarks.run --only baselines # a subset (RESULTS.md untouched)

Suites: `speed` = cache, baselines, sweep, bf16 (generation, sweeps and caching against
unbridged transformers and the peer library); `all` adds load and generate (the batch-1
reference, the overhead against the bridged model's own generate, profile, peak memory).

Every measurement runs in a fresh worker process (benchmarks/bench_*.py): timing workers run
their candidates in turn and report medians and paired ratios; memory workers run one variant
each and report its peak RSS. Results: benchmarks/results/{full,quick}[-speed].json, and one
file per benchmark ({full,quick}-<name>.json, which --reuse reads). A suite's run also rewrites
the part of benchmarks/RESULTS.md between its AUTO markers (benchmarks/report.py); the text
around them is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common
from benchmarks.common import log, run_worker
from benchmarks.report import render, targets, update_results_md

HERE = Path(__file__).resolve().parent
SUITES = {
    "all": ("load", "cache", "generate", "sweep", "baselines", "bf16"),
    "speed": ("cache", "baselines", "sweep", "bf16"),
}

# ---------------------------------------------------------------- the benchmarks


def bench_cache(quick: bool, memory: bool = True) -> dict:
    q = ["--quick"] if quick else []
    log("[cache] timing (one process, candidates interleaved)")
    out = dict(time=run_worker("bench_cache", "time", *q))
    variants = [] if not memory else ["wb"] if quick else ["wb", "hf_eager"]
    out["memory"] = {}
    for v in variants:
        log(f"[cache] peak memory: {v}")
        out["memory"][v] = run_worker("bench_cache", "memory", v, *q)
    return out


def bench_load(quick: bool) -> dict:
    from benchmarks.bench_load import MODELS

    warm_models = MODELS[:1] if quick else MODELS
    reps = 3
    out = dict(warm={m: [] for m in warm_models}, gguf={}, profile={})
    for r in range(reps):  # alternate the models, one fresh process each
        for m in warm_models:
            res = run_worker("bench_load", "warm", m)
            out["warm"][m].append(res)
            log(f"[load] warm {m} rep {r + 1}: call {res['load_call_s']} s, process {res['process_wall_s']} s")
    if not quick:
        for r in range(1):  # a reference figure, not a ratio target: one run each
            for m in MODELS:
                res = run_worker("bench_load", "gguf", m)
                out["gguf"].setdefault(m, []).append(res)
                log(
                    f"[load] gguf {m} rep {r + 1}: from_pretrained {res['from_pretrained_s']} s, "
                    f"total {res['total_s']} s, process {res['process_wall_s']} s"
                )
        for m in MODELS:
            out["profile"][m] = run_worker("bench_load", "profile", m)
    out["phases"] = {m: run_worker("bench_load", "phases", m) for m in warm_models}
    summary = {}
    for m, runs in out["warm"].items():
        s = dict(
            load_call_s=common.summary([r["load_call_s"] for r in runs]),
            import_s=common.summary([r["import_s"] for r in runs]),
            import_libs_s=common.summary([r.get("import_libs_s", 0.0) for r in runs]),
            process_wall_s=common.summary([r["process_wall_s"] for r in runs]),
            ru_maxrss_mb=common.median([r["ru_maxrss_mb"] for r in runs]),
        )
        if all("second_call_s" in r for r in runs):
            s["second_call_s"] = common.summary([r["second_call_s"] for r in runs])
            s["second_call_cpu_s"] = common.summary([r["second_call_cpu_s"] for r in runs])
        cpu = [r["load_call_cpu_s"] for r in runs if "load_call_cpu_s" in r]
        if cpu:  # CPU seconds of the call: what the wall time would be on an idle machine
            s["load_call_cpu_s"] = common.summary(cpu)
            s["process_cpu_s"] = common.summary([r["process_cpu_s"] for r in runs if "process_cpu_s" in r])
        if m in out["gguf"]:
            g = out["gguf"][m]
            s["gguf_from_pretrained_s"] = common.summary([r["from_pretrained_s"] for r in g])
            s["gguf_total_s"] = common.summary([r["total_s"] for r in g])
            s["gguf_process_wall_s"] = common.summary([r["process_wall_s"] for r in g])
            s["gguf_ru_maxrss_mb"] = common.median([r["ru_maxrss_mb"] for r in g])
            if all("total_cpu_s" in r for r in g):
                s["gguf_total_cpu_s"] = common.summary([r["total_cpu_s"] for r in g])
            s["gguf_total_over_warm_call"] = s["gguf_total_s"]["median"] / s["load_call_s"]["median"]
        summary[m] = s
    out["summary"] = summary
    return out


def bench_generate(quick: bool) -> dict:
    q = ["--quick"] if quick else []
    if quick:  # one process for both, to pay one model load
        log("[generate] ref, overhead")
        out = run_worker("bench_generate", "all", *q, timeout=4 * 3600)
        out["profile"] = None
    else:
        out = {}
        for what in ("ref", "overhead", "profile"):
            log(f"[generate] {what}")
            out[what] = run_worker("bench_generate", what, *q, timeout=4 * 3600)
    variants = ["wb_steered"] if quick else ["reference", "wb_steered", "hf_generate", "sweep_batched", "sweep_loop"]
    out["memory"] = {}
    for v in variants:
        log(f"[generate] peak memory: {v}")
        out["memory"][v] = run_worker("bench_generate", "memory", v, *q, timeout=4 * 3600)
    return out


def bench_sweep(quick: bool) -> dict:
    log("[sweep] batched vs loop (one process, candidates interleaved)")
    return run_worker("bench_generate", "sweep", *(["--quick"] if quick else []))


def bench_baselines(quick: bool) -> dict:
    log("[baselines] unbridged generate, plain hook, peer, wb twin, wb bridge")
    return run_worker("bench_baselines", "time", *(["--quick"] if quick else []))


def bench_bf16(quick: bool) -> dict:
    log("[bf16] speed and agreement against fp32")
    return run_worker("bench_bf16", "run", *(["--quick"] if quick else []))


BENCHMARKS = {
    "load": bench_load,
    "cache": bench_cache,
    "generate": bench_generate,
    "sweep": bench_sweep,
    "baselines": bench_baselines,
    "bf16": bench_bf16,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes (about 3 minutes)")
    p.add_argument(
        "--suite",
        default="all",
        choices=sorted(SUITES),
        help="which benchmarks: " + "; ".join(f"{k} = {', '.join(v)}" for k, v in SUITES.items()),
    )
    p.add_argument(
        "--only",
        default="",
        help="comma-separated benchmarks instead of a suite (of: "
        + ", ".join(BENCHMARKS)
        + "); RESULTS.md is then left alone",
    )
    p.add_argument(
        "--omp-wait-policy",
        default="passive",
        choices=["passive", "default"],
        help="OMP_WAIT_POLICY for the workers (passive: no spinning beside other "
        "busy processes; default: leave the environment as it is)",
    )
    p.add_argument("--no-md", action="store_true", help="do not touch RESULTS.md")
    p.add_argument(
        "--reuse",
        default="",
        help="comma-separated benchmarks whose results to take from the last run of "
        "the same size (results/{full,quick}-<name>.json) instead of running "
        "them again, e.g. to finish a run that was interrupted",
    )
    a = p.parse_args()
    common.OMP_WAIT_POLICY = "PASSIVE" if a.omp_wait_policy == "passive" else os.environ.get("OMP_WAIT_POLICY")
    only = [x.strip() for x in a.only.split(",") if x.strip()] or list(SUITES[a.suite])
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmarks {unknown}: choose from {list(BENCHMARKS)}")
    t0 = time.perf_counter()
    os.environ["WB_BENCH_TMP"] = tempfile.mkdtemp(prefix="wb-bench-")
    res = dict(
        command=".venv/bin/python -m benchmarks.run " + " ".join(shlex.quote(x) for x in sys.argv[1:]),
        quick=a.quick,
        omp_wait_policy=common.OMP_WAIT_POLICY,
        machine=common.machine(),
        benchmarks={},
    )
    reuse = [x.strip() for x in a.reuse.split(",") if x.strip()]
    size = "quick" if a.quick else "full"
    for name, fn in BENCHMARKS.items():
        if name not in only:
            continue
        part = HERE / "results" / f"{size}-{name}.json"
        if name in reuse:
            if part.exists():
                res["benchmarks"][name] = json.loads(part.read_text())
                log(f"[{name}] reused {part.name}")
            else:
                log(f"[{name}] no {part.name} to reuse: left out")
            continue
        t = time.perf_counter()
        started = dict(date=common.machine()["date"], loadavg_start=os.getloadavg())
        # the speed suite leaves out peak memory (no target of its own; ~1.5 min)
        kw = dict(memory=False) if name == "cache" and a.suite == "speed" and not a.only else {}
        res["benchmarks"][name] = fn(a.quick, **kw)
        res["benchmarks"][name]["run"] = dict(started, elapsed_s=time.perf_counter() - t, loadavg_end=os.getloadavg())
        part.parent.mkdir(exist_ok=True)
        part.write_text(json.dumps(res["benchmarks"][name], indent=1, default=str))
        log(f"[{name}] done in {time.perf_counter() - t:.0f} s")
    res["targets"] = targets(res["benchmarks"])
    res["elapsed_s"] = time.perf_counter() - t0
    res["loadavg_end"] = os.getloadavg()
    suite = None if a.only else a.suite
    stem = size + ("" if suite == "all" else f"-{suite}" if suite else "-only-" + "-".join(only))
    out = HERE / "results" / f"{stem}.json"
    out.parent.mkdir(exist_ok=True)
    res["json"] = str(out.relative_to(HERE.parent))
    out.write_text(json.dumps(res, indent=1, default=str))
    text = render(res)
    if not a.no_md and suite is not None:
        update_results_md(text, size if suite == "all" else f"{size} {suite}")
    print(text)
    print(f"\nresults: {out}  ({res['elapsed_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
