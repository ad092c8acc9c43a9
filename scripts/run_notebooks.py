"""Execute the notebooks in notebooks/ top to bottom and save their outputs in place.

    .venv/bin/python scripts/run_notebooks.py                  # every notebook, committed sizes
    .venv/bin/python scripts/run_notebooks.py --only 02_steering
    WB_NB_PAIRS=8 .venv/bin/python scripts/run_notebooks.py    # env vars reach the parameter cells

The kernel is this interpreter: the `python3` kernel spec whose command is plain `python`
(what `ipykernel install --sys-prefix` writes) is started as `sys.executable`, so run this
script with the venv's python. A `python3` spec pointing at another interpreter is refused.
The kernel inherits this process's environment, which is how WB_NB_* settings reach the
`parameters` cell of each notebook.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "python3"
# Defaults for the kernels' environment (a variable already set wins). OpenMP's default
# spin-waiting made torch 10x slower here whenever another process kept the cores busy
# (2 prompts x 8 new tokens: 36 s instead of 3 s); passive waiting costs little when idle.
KERNEL_ENV = {"HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def notebooks(directory: Path = NOTEBOOKS) -> list[Path]:
    """Every notebook in `directory`, in name order (checkpoints excluded)."""
    return sorted(p for p in directory.glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def check_kernel() -> None:
    """Refuse a `python3` kernel spec that would start an interpreter other than this one."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(KERNEL)
    exe = spec.argv[0]
    # jupyter_client replaces a bare "python" / "python3" / "python3.X" with sys.executable
    bare = {"python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
    if exe not in bare and Path(exe).resolve() != Path(sys.executable).resolve():
        raise SystemExit(
            f"the {KERNEL!r} kernel spec at {spec.resource_dir} runs {exe}, not {sys.executable}. "
            f"Fix: {sys.executable} -m ipykernel install --sys-prefix, and remove the other spec"
        )


@dataclass(frozen=True)
class Run:
    seconds: float  # wall time, kernel start-up included
    cpu_seconds: float  # CPU time of the kernel (user + system): the work, whatever else runs
    cell_seconds: dict[int, float]  # code cell index -> execution time


def execute(path: Path, out: Path | None = None, *, timeout: int = 600) -> Run:
    """Run the notebook at `path` with its own folder as working directory and write the
    executed copy to `out` (default: `path` itself).

    On a failing cell nbclient's CellExecutionError propagates. The partial copy, with the
    traceback in its outputs, is written to `out` unless that is the source notebook: a
    failed run never replaces a committed copy (it goes to a temporary file, named on stderr).
    """
    import nbformat
    from nbclient import NotebookClient

    out = out or path
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=timeout, resources={"metadata": {"path": str(path.parent)}})
    start, cpu_start = time.perf_counter(), _children_cpu()
    try:
        client.execute()  # starts the kernel, runs every cell, shuts the kernel down
    except Exception:
        if out.resolve() == path.resolve():
            fd, name = tempfile.mkstemp(prefix=f"{path.stem}-failed-", suffix=".ipynb")
            os.close(fd)
            out = Path(name)
        _strip_volatile(nb)
        nbformat.write(nb, out)
        print(f"[run_notebooks] {path.name} failed; partial copy with the traceback: {out}", file=sys.stderr)
        raise
    run = Run(time.perf_counter() - start, _children_cpu() - cpu_start, _cell_seconds(nb))
    _strip_volatile(nb)
    nbformat.write(nb, out)
    return run


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the kernel counts once shut down)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cell_seconds(nb) -> dict[int, float]:
    from datetime import datetime

    out = {}
    for i, cell in enumerate(nb.cells):
        stamps = cell.metadata.get("execution", {})
        if "iopub.execute_input" in stamps and "shell.execute_reply" in stamps:
            begin, end = (datetime.fromisoformat(stamps[k]) for k in ("iopub.execute_input", "shell.execute_reply"))
            out[i] = (end - begin).total_seconds()
    return out


def _strip_volatile(nb) -> None:
    """Drop per-run metadata (execution timestamps) so re-runs only change real outputs."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this notebook (file name, with or without .ipynb); repeatable",
    )
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    for key, value in KERNEL_ENV.items():
        os.environ.setdefault(key, value)  # the kernels inherit this process's environment
    check_kernel()
    paths = notebooks()
    if args.only:
        wanted = {n.removesuffix(".ipynb") for n in args.only}
        unknown = wanted - {p.stem for p in paths}
        if unknown:
            parser.error(f"no notebook named {sorted(unknown)}; have {[p.stem for p in paths]}")
        paths = [p for p in paths if p.stem in wanted]
    for path in paths:
        print(f"[run_notebooks] {path.relative_to(ROOT)} ...", flush=True)
        run = execute(path, timeout=args.timeout)
        size = path.stat().st_size / 1024
        slowest = sorted(run.cell_seconds.items(), key=lambda kv: -kv[1])[:3]
        cells = ", ".join(f"cell {i} {s:.0f} s" for i, s in slowest)
        print(
            f"[run_notebooks] {path.name}: {run.seconds:.0f} s wall, {run.cpu_seconds:.0f} s kernel "
            f"CPU (slowest: {cells}), {size:.0f} KiB",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
