"""Shared helpers: interleaved timing, peak memory, machine facts, and worker subprocesses.

Timing: candidates are run in turn (A B C A B C ...) inside one process after a warm-up, and each
figure is the median over repetitions; ratios are taken repetition by repetition (A_i / B_i)
and their median is reported, so a slow patch of a shared machine hits both sides of a pair.

Memory: a worker subprocess sets up (imports, model load), resets the kernel's peak-RSS mark
(`/proc/self/clear_refs` <- 5, which sets VmHWM to the current RSS), runs one variant once, and
reads VmHWM again. `peak_rss_mb` is then the process's peak while the variant ran (model and all),
`delta_mb` the growth over the RSS just before it, and `ru_maxrss_mb` the whole process's peak
(load included), from getrusage.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
RESULT_MARK = "BENCH-RESULT "  # a worker prints its JSON result on one line after this mark


# OpenMP's default wait policy spins; beside other busy processes on 2 cores that made a
# 2-thread forward 5-13x slower than a 1-thread one here. PASSIVE is the default of run.py
# (--omp-wait-policy default leaves the variable as the caller has it).
OMP_WAIT_POLICY: str | None = "PASSIVE"


def env() -> dict:
    e = dict(os.environ)
    e.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONWARNINGS="ignore",
    )
    if OMP_WAIT_POLICY:
        e["OMP_WAIT_POLICY"] = OMP_WAIT_POLICY
    return e


def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    import transformers

    try:
        import importlib.metadata as md

        import transformer_lens  # noqa: F401

        tl = md.version("transformer-lens")
    except Exception:
        tl = "?"
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return dict(
        nproc=os.cpu_count(),
        cpu_model=model,
        mem_gb=round(mem_gb, 1),
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        transformer_lens=tl,
        loadavg_start=os.getloadavg(),
        nice=os.nice(0),
        date=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        git_commit=_git("rev-parse", "--short", "HEAD"),
    )


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return "?"


# ---------------------------------------------------------------- timing


@dataclass
class Timings:
    """Seconds per repetition of each candidate: wall clock, and the process's CPU time (all
    threads). On a shared machine a run that was descheduled shows it in wall time but not in
    CPU time, so the CPU-time ratios are the steadier check of the wall-time ones."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]

    def summary(self) -> dict:
        return {k: dict(wall=summary(self.wall[k]), cpu=summary(self.cpu[k])) for k in self.wall}

    def ratio(self, a: str, b: str) -> dict:
        """time(a) / time(b), repetition by repetition."""
        return dict(
            wall=summary(paired_ratios(self.wall[a], self.wall[b])),
            cpu=summary(paired_ratios(self.cpu[a], self.cpu[b])),
        )


def interleave(
    candidates: dict[str, Callable[[], object]], reps: int, warmup: int = 1, log: Callable[[str], None] | None = None
) -> Timings:
    """Each candidate `reps` times, in turn; the order rotates every repetition so no candidate
    always follows the same one."""
    names = list(candidates)
    for _ in range(warmup):
        for n in names:
            candidates[n]()
    out = Timings({n: [] for n in names}, {n: [] for n in names})
    for r in range(reps):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            c0, t0 = time.process_time(), time.perf_counter()
            candidates[n]()
            out.wall[n].append(time.perf_counter() - t0)
            out.cpu[n].append(time.process_time() - c0)
            if log:
                log(f"  rep {r + 1}/{reps} {n}: {out.wall[n][-1]:.3f} s wall, {out.cpu[n][-1]:.3f} s cpu")
    return out


def median(xs) -> float:
    return float(statistics.median(xs))


def paired_ratios(num: list[float], den: list[float]) -> list[float]:
    return [a / b for a, b in zip(num, den)]


def summary(xs: list[float]) -> dict:
    return dict(median=median(xs), min=min(xs), max=max(xs), n=len(xs), all=[round(x, 4) for x in xs])


# ---------------------------------------------------------------- memory


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB -> MB
    return float("nan")


def rss_mb() -> float:
    return _status("VmRSS")


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then peak_rss_mb is the whole process's peak; ru_maxrss says the same


def peak_mb() -> float:
    return _status("VmHWM")


def ru_maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_memory(fn: Callable[[], object]) -> dict:
    import gc

    gc.collect()
    reset_peak()
    before = rss_mb()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    peak = peak_mb()
    return dict(
        rss_before_mb=round(before, 1),
        peak_rss_mb=round(peak, 1),
        delta_mb=round(peak - before, 1),
        ru_maxrss_mb=round(ru_maxrss_mb(), 1),
        seconds=round(seconds, 3),
    )


# ---------------------------------------------------------------- subprocess workers


def _raw_name() -> str:
    return "-".join(a.lstrip("-") for a in [Path(sys.argv[0]).stem, *sys.argv[1:]])


RAW = ROOT / "benchmarks" / "results" / "raw"


def _alive(marker: Path) -> bool:
    try:
        os.kill(int(marker.read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


def resume_or_start() -> None:
    """Resume support for interrupted runs: when results/raw/RESUME exists, a worker whose
    result is already in results/raw/ (from an earlier or a concurrent worker with the same
    arguments, which marks itself with a .running file) re-emits it and exits."""
    RAW.mkdir(parents=True, exist_ok=True)
    done, running = RAW / f"{_raw_name()}.json", RAW / f"{_raw_name()}.running"
    if (RAW / "RESUME").exists():
        while running.exists() and not done.exists() and _alive(running):
            time.sleep(5)
        if done.exists():
            print(RESULT_MARK + done.read_text(), flush=True)
            sys.exit(0)
    running.write_text(str(os.getpid()))


def emit(result: dict) -> None:
    """A worker's last word: its result as one JSON line, also kept in results/raw/ so an
    interrupted run loses no finished measurement."""
    line = json.dumps(result)
    RAW.mkdir(parents=True, exist_ok=True)
    (RAW / f"{_raw_name()}.json").write_text(line)
    (RAW / f"{_raw_name()}.running").unlink(missing_ok=True)
    print(RESULT_MARK + line, flush=True)


def run_worker(module: str, *args: str, timeout: float = 4 * 3600) -> dict:
    """Run `python -m benchmarks.<module> args...` in a fresh process; return its JSON result,
    plus the whole process's wall time as seen from here."""
    cmd = [PY, "-m", f"benchmarks.{module}", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"worker {' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    out = json.loads(lines[-1][len(RESULT_MARK) :])
    out["process_wall_s"] = round(wall, 3)
    return out


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
