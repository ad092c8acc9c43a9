"""A sweep on this machine's CPU cores: 1 process x N threads against N Ray workers x 1 thread.

    python -m benchmarks.bench_scale                       # SmolLM2, 64 jobs x 32 tokens
    python -m benchmarks.bench_scale --model tiny-instruct --jobs 16 --new-tokens 8   # smoke

The sweep is 16 base queries x 4 steering settings (none; adjust at layer 10; add at 15;
ablate at 20), generated with experiments.jobs.run_jobs into a fresh run directory per
timing, greedy. Both sides generate the same batches (job_batches fixes them first) and must
write the same records. Timings alternate (local, ray, local, ray, ...) after a warm-up of each;
the Ray workers are started, and their models loaded, before the timings (reported apart).
Writes benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see benchmarks/common.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import workbench as wb
from workbench.data import IFEvalRow
from workbench.executor import LOCAL, RayExecutor
from workbench.experiments.jobs import Job, job_batches, run_jobs
from workbench.experiments.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent


def sweep(model, n_jobs: int) -> list[Job]:
    queries = wb.base_queries()[: max(1, n_jobs // 4)]
    pairs = wb.instruction_pairs(wb.base_queries()[100:116], "change_case:english_lowercase", seed=0)
    n = model.cfg.n_layers
    layers = [n // 3, n // 2, 2 * n // 3]  # 10, 15, 20 on SmolLM2
    vec = wb.derive(wb.cache_pairs(model, pairs, layers=sorted(set(layers)), show_progress=False))
    settings = [
        (),
        (wb.Steering(vec, layers[0], "adjust"),),
        (wb.Steering(vec, layers[1], "add", 4.0),),
        (wb.Steering(vec, layers[2], "ablate"),),
    ]
    jobs = []
    for i, q in enumerate(queries):
        row = IFEvalRow(f"q{i}", q, ("change_case:english_lowercase",), ({},), q)
        jobs += [Job(f"{k}/{i}", q, row, s, dict(setting=k)) for k, s in enumerate(settings)]
    return jobs[:n_jobs]


def timed(model, jobs, executor, args) -> tuple[float, list[dict]]:
    with (
        tempfile.TemporaryDirectory() as d,
        RunDir.open(Path(d) / "run", "bench-scale", {}, model=model, data_hash="bench") as run,
    ):
        start = time.perf_counter()
        table = run_jobs(
            run,
            model,
            jobs,
            phase="sweep",
            max_new_tokens=args.new_tokens,
            batch_size=args.batch_size,
            executor=executor,
            show_progress=False,
        )
        return time.perf_counter() - start, table.to_dict("records")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--jobs", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)  # the single process uses every core
    model = wb.load_model(args.model)
    jobs = sweep(model, args.jobs)
    n_batches = len(job_batches(model, jobs, args.batch_size))
    start = time.perf_counter()
    ray_ex = RayExecutor(workers=args.workers, threads=max(1, cores // args.workers))
    ray_ex._ensure_pool(model)
    list(ray_ex.imap(model, _noop, range(args.workers)))  # every worker has loaded its model
    startup = time.perf_counter() - start
    print(
        f"{len(jobs)} jobs in {n_batches} batches of {args.batch_size}, {args.new_tokens} tokens; "
        f"ray workers up in {startup:.1f} s",
        flush=True,
    )
    sides = {
        f"1 process x {cores} threads": LOCAL,
        f"{args.workers} ray workers x {max(1, cores // args.workers)} thread(s)": ray_ex,
    }
    times: dict[str, list[float]] = {k: [] for k in sides}
    records = {}
    for name, ex in sides.items():  # warm-up
        timed(model, jobs[: args.batch_size], ex, args)
    for rep in range(args.repeats):
        for name, ex in sides.items():
            seconds, recs = timed(model, jobs, ex, args)
            times[name].append(seconds)
            records.setdefault(name, recs)
            print(f"  rep {rep}: {name:32s} {seconds:7.1f} s", flush=True)
    ray_ex.close()
    a, b = list(sides)
    same = records[a] == records[b]
    ratios = [x / y for x, y in zip(times[a], times[b])]
    result = dict(
        model=args.model,
        jobs=len(jobs),
        batches=n_batches,
        batch_size=args.batch_size,
        new_tokens=args.new_tokens,
        cores=cores,
        ray_startup_s=round(startup, 1),
        seconds={k: [round(t, 2) for t in v] for k, v in times.items()},
        median_s={k: round(statistics.median(v), 2) for k, v in times.items()},
        speedup_median=round(statistics.median(ratios), 3),
        identical_records=same,
        load=os.getloadavg(),
        torch=torch.__version__,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def _noop(model, task):
    return task


if __name__ == "__main__":
    main()
