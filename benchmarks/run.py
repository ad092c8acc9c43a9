"""Run every benchmark, write a JSON of the results and (full runs) the numbers in RESULTS.md.

    .venv/bin/python -m benchmarks.run            # full, ~20 min on 2 cores
    .venv/bin/python -m benchmarks.run --quick    # smaller sizes, ~3 min
    .venv/bin/python -m benchmarks.run --only generate

Every measurement runs in a fresh worker process (benchmarks/bench_*.py): timing workers run
their candidates in turn and report medians and paired ratios; memory workers run one variant
each and report its peak RSS. Results: benchmarks/results/{full,quick}.json. A run also
rewrites the part of benchmarks/RESULTS.md between its AUTO markers (one pair for full runs,
one for quick runs); the text around them is kept.
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

HERE = Path(__file__).resolve().parent
def markers(size: str) -> tuple[str, str]:
    return f"<!-- BEGIN AUTO {size} (benchmarks/run.py) -->", f"<!-- END AUTO {size} -->"


# ---------------------------------------------------------------- the benchmarks

def bench_cache(quick: bool) -> dict:
    q = ["--quick"] if quick else []
    log("[cache] timing (one process, candidates interleaved)")
    out = dict(time=run_worker("bench_cache", "time", *q))
    variants = ["wb"] if quick else ["wb", "hf_eager"]
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
            log(f"[load] warm {m} rep {r + 1}: call {res['load_call_s']} s, "
                f"process {res['process_wall_s']} s")
    if not quick:
        for r in range(1):  # a reference figure, not a ratio target: one run each
            for m in MODELS:
                res = run_worker("bench_load", "gguf", m)
                out["gguf"].setdefault(m, []).append(res)
                log(f"[load] gguf {m} rep {r + 1}: from_pretrained {res['from_pretrained_s']} s, "
                    f"total {res['total_s']} s, process {res['process_wall_s']} s")
        for m in MODELS:
            out["profile"][m] = run_worker("bench_load", "profile", m)
    out["phases"] = {m: run_worker("bench_load", "phases", m) for m in warm_models}
    summary = {}
    for m, runs in out["warm"].items():
        s = dict(load_call_s=common.summary([r["load_call_s"] for r in runs]),
                 import_s=common.summary([r["import_s"] for r in runs]),
                 import_libs_s=common.summary([r.get("import_libs_s", 0.0) for r in runs]),
                 process_wall_s=common.summary([r["process_wall_s"] for r in runs]),
                 ru_maxrss_mb=common.median([r["ru_maxrss_mb"] for r in runs]))
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
    if quick:  # one process for the three, to pay one model load
        log("[generate] ref, overhead, sweep")
        out = run_worker("bench_generate", "all", *q, timeout=4 * 3600)
        out["profile"] = None
    else:
        out = {}
        for what in ("ref", "overhead", "sweep", "profile"):
            log(f"[generate] {what}")
            out[what] = run_worker("bench_generate", what, *q, timeout=4 * 3600)
    variants = (["wb_steered"] if quick else
                ["reference", "wb_steered", "hf_generate", "sweep_batched", "sweep_loop"])
    out["memory"] = {}
    for v in variants:
        log(f"[generate] peak memory: {v}")
        out["memory"][v] = run_worker("bench_generate", "memory", v, *q, timeout=4 * 3600)
    return out


# ---------------------------------------------------------------- targets

def target(name, what, wall, cpu, op, threshold, note=""):
    ok = (lambda x: x >= threshold) if op == ">=" else (lambda x: x <= threshold)
    return dict(name=name, what=what, measured_wall=wall, measured_cpu=cpu, op=op,
                threshold=threshold, met=bool(ok(wall)),
                met_cpu=None if cpu is None else bool(ok(cpu)), note=note)


def targets(b: dict) -> list[dict]:
    out = []
    if "cache" in b:
        t = b["cache"]["time"]
        for base in ("hf_eager", "hf_sdpa"):
            r = t[f"throughput_ratio_wb_vs_{base}"]
            out.append(target(f"1. caching vs raw forward ({base.removeprefix('hf_')})",
                              "wb prompts/s / raw prompts/s", r["wall"]["median"],
                              r["cpu"]["median"], ">=", 0.9))
    if "load" in b:
        for m, s in b["load"]["summary"].items():
            out.append(target(f"2. warm load {m}", "wb.load_model call, s (fresh process, after "
                              "importing transformers and TransformerLens)",
                              s["load_call_s"]["median"],
                              s["load_call_cpu_s"]["median"] if "load_call_cpu_s" in s else None,
                              "<=", 3.0,
                              note=f"whole process {s['process_wall_s']['median']:.2f} s"))
            if "second_call_s" in s:
                out.append(target(f"2. warm load {m}, again in the same process", "second "
                                  "wb.load_model call, s", s["second_call_s"]["median"],
                                  s["second_call_cpu_s"]["median"], "<=", 3.0))
    if "generate" in b:
        g = b["generate"]
        r = g["ref"]["throughput_ratio_wb_vs_reference"]
        out.append(target("3a. steered generate vs paper's loop", "tokens/s ratio",
                          r["wall"]["median"], r["cpu"]["median"], ">=", 30.0))
        out.append(dict(name="3a. tokens identical to the reference", what="rows identical",
                        measured_wall=g["ref"]["rows_identical"], measured_cpu=None, op="==",
                        threshold=g["ref"]["rows_compared"],
                        met=g["ref"]["rows_identical"] == g["ref"]["rows_compared"], met_cpu=None,
                        note=f"of {g['ref']['rows_compared']} prompts run through the reference"))
        r = g["overhead"]["time_ratio_wb_steered_over_hf_generate"]
        out.append(target("3b. steering overhead vs HF generate", "time ratio (1.10 = +10%)",
                          r["wall"]["median"], r["cpu"]["median"], "<=", 1.10))
        r = g["sweep"]["speedup_batched_vs_loop"]
        out.append(target("3c. batched sweep vs loop", "speed-up", r["wall"]["median"],
                          r["cpu"]["median"], ">=", 5.0))
    return out


# ---------------------------------------------------------------- report

def fmt(x, nd=2):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def when(part: dict) -> str:
    r = part.get("run")
    if not r:
        return ""
    return (f" (run {r['date']}, {r['elapsed_s'] / 60:.1f} min, load average "
            f"{r['loadavg_start'][0]:.1f} -> {r['loadavg_end'][0]:.1f})")


def render(res: dict) -> str:
    m, b = res["machine"], res["benchmarks"]
    L = [f"Command: `{res['command']}`  ",
         f"Report written: {m['date']} (this invocation: {res['elapsed_s'] / 60:.1f} min; each "
         f"section says when its measurements ran)  ",
         f"Machine: {m['nproc']} cores, {m['cpu_model']}, {m['mem_gb']} GiB; torch {m['torch']} "
         f"({m['torch_threads']} threads), transformers {m['transformers']}, transformer-lens "
         f"{m['transformer_lens']}, Python {m['python']}; git {m['git_commit']}  ",
         f"Load average at start / end: {', '.join(f'{x:.1f}' for x in m['loadavg_start'])} / "
         f"{', '.join(f'{x:.1f}' for x in res['loadavg_end'])}; OMP_WAIT_POLICY="
         f"{res['omp_wait_policy'] or '(unset)'}; nice {m.get('nice', '?')}  ",
         "Raw JSON: `benchmarks/results/" + ("quick" if res["quick"] else "full") + ".json`", "",
         "### Targets", "",
         "| target | measure | median (wall) | median (CPU time) | target | met |",
         "|---|---|---|---|---|---|"]
    for t in res["targets"]:
        met = "yes" if t["met"] else "**no**"
        if t["met_cpu"] is not None and t["met_cpu"] != t["met"]:
            met += f" (CPU time: {'yes' if t['met_cpu'] else 'no'})"
        note = f" ({t['note']})" if t["note"] else ""
        L.append(f"| {t['name']} | {t['what']}{note} | {fmt(t['measured_wall'])} | "
                 f"{fmt(t['measured_cpu'])} | {t['op']} {t['threshold']} | {met} |")
    if "cache" in b:
        t = b["cache"]["time"]
        L += ["", "### 1. Caching throughput" + when(b["cache"]), "",
              f"{t['n_pairs']} pairs = {t['n_prompts']} prompts ({t['n_tokens']} tokens), batch "
              f"{t['batch_size']}, all {t['n_layers']} layers, position last. Max |wb - HF| over "
              f"layers 0..{t['n_layers'] - 2}: {t['max_abs_diff_vs_hf']:.3g}. The bridge runs "
              f"attention as `{t['bridge_attn_implementation']}`.", "",
              "| variant | prompts/s (wall) | s/run wall median [min-max] | s/run CPU median | "
              "wb throughput / this (wall, CPU) | peak RSS MB (growth) |",
              "|---|---|---|---|---|---|"]
        mem = b["cache"]["memory"]
        for k, s in t["seconds"].items():
            r = t.get(f"throughput_ratio_wb_vs_{k}")
            rr = f"{r['wall']['median']:.2f}, {r['cpu']['median']:.2f}" if r else "-"
            mm = f"{mem[k]['peak_rss_mb']:.0f} (+{mem[k]['delta_mb']:.0f})" if k in mem else "-"
            L.append(f"| {k} | {t['prompts_per_s'][k]:.2f} | {s['wall']['median']:.2f} "
                     f"[{s['wall']['min']:.2f}-{s['wall']['max']:.2f}] | {s['cpu']['median']:.2f} "
                     f"| {rr} | {mm} |")
    if "load" in b:
        L += ["", "### 2. Model load (fresh process each)" + when(b["load"]), "",
              "| model | wb.load_model call s wall [min-max] | call CPU s | same call again in "
              "the process, s wall (CPU) | import workbench s | import transformers + "
              "TransformerLens s | "
              "whole process s (CPU s) | process peak RSS MB | GGUF from_pretrained s | GGUF "
              "total s (assemble + tokenizer + model) | GGUF process peak MB | GGUF total / "
              "warm call |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for m, s in b["load"]["summary"].items():
            g = lambda k: fmt(s[k]["median"]) if k in s else "-"  # noqa: E731
            gc = g("gguf_total_cpu_s")
            L.append(f"| {m} | {s['load_call_s']['median']:.2f} [{s['load_call_s']['min']:.2f}-"
                     f"{s['load_call_s']['max']:.2f}] | {g('load_call_cpu_s')} | "
                     f"{g('second_call_s')} ({g('second_call_cpu_s')}) | "
                     f"{s['import_s']['median']:.2f} | {g('import_libs_s')} | "
                     f"{s['process_wall_s']['median']:.2f} ({g('process_cpu_s')}) | {s['ru_maxrss_mb']:.0f} | "
                     f"{g('gguf_from_pretrained_s')} | {g('gguf_total_s')} (CPU {gc}) | "
                     f"{fmt(s.get('gguf_ru_maxrss_mb'), 0)} | {fmt(s.get('gguf_total_over_warm_call'), 1)} |")
        for m, ph in b["load"].get("phases", {}).items():
            L += ["", f"The warm load of {m} step by step (fresh process, no profiler"
                  + when(ph) + f"; the bridge's tokenizer is "
                  f"{'not ' if ph['bridge_reloaded_tokenizer'] else ''}the object workbench "
                  f"passed it):", "",
                  "| step | wall s | CPU s |", "|---|---|---|"]
            L += [f"| {x['phase']} | {x['wall_s']:.2f} | {x['cpu_s']:.2f} |" for x in ph["phases"]]
            L.append(f"| total | {ph['total_wall_s']:.2f} | {ph['total_cpu_s']:.2f} |")
        for m, p in b["load"].get("profile", {}).items():
            L += ["", f"Where the warm load of {m} goes (cProfile, cumulative "
                  f"{'CPU ' if p.get('timer') == 'process_time' else ''}s; the profiled call took "
                  f"{p['load_call_wall_under_profiler_s']:.2f} s wall, "
                  f"{p.get('load_call_cpu_under_profiler_s', float('nan')):.2f} s CPU):", "",
                  "| function | cumulative s |", "|---|---|"]
            L += [f"| {k} | {v:.2f} |" for k, v in p["cumulative_s"].items()]
    if "generate" in b:
        g = b["generate"]
        r, mem = g["ref"], g["memory"]
        L += ["", "### 3. Steered generation" + when(g), "",
              "### 3a. Steered generation vs the paper's loop", "",
              f"{r['n_prompts']} prompts x up to {r['new_tokens']} new tokens, greedy, real EOS, "
              f"`{r['spec']}`; wb.generate batch {r['batch_size']} ({r['wb_tokens']} tokens "
              f"generated, {r['wb_seconds']['median']:.1f} s median); reference batch 1 on "
              f"{r['reference_prompts']} prompts in {r['reference_chunks']} chunks "
              f"({r['reference_tokens']} tokens). Finish reasons: {r['finish_reasons']}."
              + (f" Note: {r['note']}." if r.get("note") else ""), "",
              "| | tokens/s wall | tokens/s CPU | ratio wall | ratio CPU |", "|---|---|---|---|---|",
              f"| wb.generate | {r['tokens_per_s']['wall']['wb']['median']:.1f} | "
              f"{r['tokens_per_s']['cpu']['wb']['median']:.1f} | "
              f"{r['throughput_ratio_wb_vs_reference']['wall']['median']:.1f} | "
              f"{r['throughput_ratio_wb_vs_reference']['cpu']['median']:.1f} |",
              f"| generate_reference | {r['tokens_per_s']['wall']['reference']['median']:.2f} | "
              f"{r['tokens_per_s']['cpu']['reference']['median']:.2f} | 1 | 1 |", "",
              f"Rows identical: {r['rows_identical']} / {r['rows_compared']}"
              + (f"; first differing token per row: {r['first_differing_token']}"
                 if r["first_differing_token"] else "") + "."]
        o = g["overhead"]
        L += ["", "### 3b. Steering overhead vs transformers' generate", "",
              f"{o['n_prompts']} prompts (one batch of {o['batch_size']}, left padded to "
              f"{o['prompt_width']} tokens) x exactly {o['new_tokens']} new tokens: EOS is "
              f"switched off on every side, so each run does the same {o['tokens_per_run']} "
              f"decode row-steps and tokens/s compares like with like. Rows identical to wb "
              f"unsteered: " + ", ".join(f"{k.removeprefix('wb_plain_vs_')} {v}/{o['n_prompts']}"
                                         for k, v in o["rows_identical"].items()) + "."
              + (f" Note: {o['note']}." if o.get("note") else ""), "",
              "| variant | tokens/s (wall) | s/run wall median [min-max] | s/run CPU median |",
              "|---|---|---|---|"]
        for k, s in o["seconds"].items():
            L.append(f"| {k} | {o['tokens_per_s'][k]:.1f} | {s['wall']['median']:.2f} "
                     f"[{s['wall']['min']:.2f}-{s['wall']['max']:.2f}] | {s['cpu']['median']:.2f} |")
        L += ["", "| time ratio | wall median [min-max] | CPU median |", "|---|---|---|"]
        for k, v in o.items():
            if k.startswith("time_ratio_"):
                L.append(f"| {k.removeprefix('time_ratio_').replace('_over_', ' / ')} | "
                         f"{v['wall']['median']:.3f} [{v['wall']['min']:.3f}-{v['wall']['max']:.3f}]"
                         f" | {v['cpu']['median']:.3f} |")
        s = g["sweep"]
        L += ["", "### 3c. Sweep: one per-row batch vs a loop of calls", "",
              f"{s['n_prompts']} prompts x {s['n_configs']} configurations (layers {s['layers']} x "
              f"weights {s['weights']}, mode {s['mode']}) x {s['new_tokens']} new tokens, real "
              f"EOS. Batched: one generate_table call, {s['rows']} rows, batch_size "
              f"{s['batch_size_batched']}. Loop: {s['n_configs']} wb.generate calls, batch_size "
              f"{s['batch_size_loop_arg']}, so batches of {s['batch_rows_loop']} rows. Tokens: "
              f"batched {s['tokens_batched']}, loop {s['tokens_loop']}; rows identical "
              f"{s['rows_identical_batched_vs_loop']}/{s['rows']}.", "",
              "| variant | s/run wall median [min-max] | s/run CPU median |", "|---|---|---|"]
        for k, v in s["seconds"].items():
            L.append(f"| {k} | {v['wall']['median']:.2f} [{v['wall']['min']:.2f}-"
                     f"{v['wall']['max']:.2f}] | {v['cpu']['median']:.2f} |")
        sp = s["speedup_batched_vs_loop"]
        L.append(f"\nSpeed-up batched vs loop: {sp['wall']['median']:.2f}x wall "
                 f"[{sp['wall']['min']:.2f}-{sp['wall']['max']:.2f}], {sp['cpu']['median']:.2f}x CPU.")
        L += ["", "### Peak memory of generation (fresh process per variant)", "",
              "| variant | peak RSS MB while it ran | growth over RSS before MB | process peak "
              "(load included) MB | s |", "|---|---|---|---|---|"]
        for k, v in mem.items():
            L.append(f"| {k} | {v['peak_rss_mb']:.0f} | {v['delta_mb']:.0f} | "
                     f"{v['ru_maxrss_mb']:.0f} | {v['seconds']:.1f} |")
        p = g.get("profile")
    if "generate" in b and p:
        L += ["", f"### Profile of one steered wb.generate batch ({p['n_prompts']} prompts x "
              f"{p['new_tokens']} tokens, EOS off; {p['wall_under_profiler_s']:.1f} s wall, "
              f"{p.get('cpu_under_profiler_s', float('nan')):.1f} s CPU under cProfile, whose "
              f"clock is {'CPU' if p.get('timer') == 'process_time' else 'wall'} time)", "",
              "| function | calls | own s | cumulative s |", "|---|---|---|---|"]
        for row in p["top_tottime"][:12]:
            L.append(f"| `{row['func']}` | {row['calls']} | {row['tottime']:.3f} | "
                     f"{row['cumtime']:.3f} |")
        L += ["", "| workbench / bridge / cache function | cumulative s |", "|---|---|"]
        for k, v in list(p["top_cumtime_selected"].items())[:14]:
            L.append(f"| `{k}` | {v:.3f} |")
    return "\n".join(L)


def update_results_md(text: str, size: str) -> None:
    BEGIN, END = markers(size)
    path = HERE / "RESULTS.md"
    old = path.read_text() if path.exists() else f"# Benchmark results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in old:
        old += f"\n{BEGIN}\n{END}\n"
    head, rest = old.split(BEGIN, 1)
    tail = rest.split(END, 1)[1] if END in rest else ""
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes (about 3 minutes)")
    p.add_argument("--only", default="cache,load,generate",
                   help="comma-separated subset of: cache, load, generate")
    p.add_argument("--omp-wait-policy", default="passive", choices=["passive", "default"],
                   help="OMP_WAIT_POLICY for the workers (passive: no spinning beside other "
                        "busy processes; default: leave the environment as it is)")
    p.add_argument("--no-md", action="store_true", help="do not touch RESULTS.md")
    p.add_argument("--reuse", default="",
                   help="comma-separated benchmarks whose results to take from the last run of "
                        "the same size (results/{full,quick}-<name>.json) instead of running "
                        "them again, e.g. to finish a run that was interrupted")
    a = p.parse_args()
    common.OMP_WAIT_POLICY = "PASSIVE" if a.omp_wait_policy == "passive" else os.environ.get("OMP_WAIT_POLICY")
    only = [x.strip() for x in a.only.split(",") if x.strip()]
    t0 = time.perf_counter()
    os.environ["WB_BENCH_TMP"] = tempfile.mkdtemp(prefix="wb-bench-")
    res = dict(command=".venv/bin/python -m benchmarks.run " + " ".join(shlex.quote(x) for x in sys.argv[1:]),
               quick=a.quick, omp_wait_policy=common.OMP_WAIT_POLICY, machine=common.machine(),
               benchmarks={})
    reuse = [x.strip() for x in a.reuse.split(",") if x.strip()]
    size = "quick" if a.quick else "full"
    for name, fn in (("load", bench_load), ("cache", bench_cache), ("generate", bench_generate)):
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
        res["benchmarks"][name] = fn(a.quick)
        res["benchmarks"][name]["run"] = dict(started, elapsed_s=time.perf_counter() - t,
                                              loadavg_end=os.getloadavg())
        part.parent.mkdir(exist_ok=True)
        part.write_text(json.dumps(res["benchmarks"][name], indent=1, default=str))
        log(f"[{name}] done in {time.perf_counter() - t:.0f} s")
    res["targets"] = targets(res["benchmarks"])
    res["elapsed_s"] = time.perf_counter() - t0
    res["loadavg_end"] = os.getloadavg()
    out = HERE / "results" / ("quick.json" if a.quick else "full.json")
    if sorted(only) != ["cache", "generate", "load"]:
        out = out.with_name(out.stem + "-only-" + "-".join(only) + ".json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str))
    text = render(res)
    if not a.no_md and sorted(only) == ["cache", "generate", "load"]:
        update_results_md(text, size)
    print(text)
    print(f"\nresults: {out}  ({res['elapsed_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
