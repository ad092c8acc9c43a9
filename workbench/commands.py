"""What every `workbench reproduce` command shares: offline mode, the options, the config built
from them (`parse_config`) and running it (`run_experiment`).

In a notebook (the CLI's own path, without the shell):

    cfg = parse_config(FormatConfig, quick=True, settings=["max_new_tokens=12"], model="tiny-instruct")
    run_experiment(run_format, cfg, Path("runs/format"))
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import typing
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Protocol, Self, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from workbench.executor import Executor
    from workbench.experiments.rundir import RunDir

console = Console(stderr=True, soft_wrap=True)  # long paths in errors stay whole


class ExperimentConfig(Protocol):
    """An experiment's frozen config dataclass, with its smoke-sized `quick()` variant."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @classmethod
    def quick(cls, **overrides: Any) -> Self: ...


ConfigT = TypeVar("ConfigT", bound=ExperimentConfig)
ConfigT_contra = TypeVar("ConfigT_contra", bound=ExperimentConfig, contravariant=True)


class RunFn(Protocol[ConfigT_contra]):
    """An experiment's run_* function."""

    def __call__(
        self, cfg: ConfigT_contra, out: str | Path, *, executor: Executor | None = ..., show_progress: bool | None = ...
    ) -> RunDir: ...


def fail(err: Exception) -> NoReturn:
    """Print `err` as one line and exit with code 2."""
    console.print(f"[red]error:[/red] {escape(str(err))}")  # "[scale]" is text, not markup
    raise typer.Exit(2)


def offline() -> None:
    """Run offline: set before any experiment module imports the hub libraries."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


DEVICE = typer.Option(None, help="where the model runs: cpu (default), cuda, cuda:1 (Ray workers take one GPU each)")
DTYPE = typer.Option(None, help="float32 (default), bfloat16 or float16")
DEVICE_MAP = typer.Option(
    None, "--device-map", help="auto, balanced or sequential: split a model too big for one GPU over every visible GPU"
)
WORKERS = typer.Option(
    None,
    help="generate on N Ray workers on this machine, each holding a model "
    "copy (one GPU each with --device cuda, else the CPU cores shared "
    "out); needs pip install -e .[scale]",
)
RAY_ADDRESS = typer.Option(
    None,
    "--ray-address",
    help="generate on a Ray cluster (auto, or "
    "ray://HEAD:10001): one worker per GPU unless "
    "--workers; needs pip install -e .[scale]",
)


MODEL = typer.Option("smollm2-135m-instruct", help="model name (wb.list_models())")
QUICK = typer.Option(False, help="smoke-sized run (minutes)")
SET = typer.Option(
    None,
    "--set",
    help="any config field as KEY=VALUE, e.g. max_new_tokens=64, weights=0,10,20, weight_unit=raw (repeatable)",
)
DATA = typer.Option(None, help="test file (IFEval JSONL)")
WITHOUT = typer.Option(None, help="requests without instructions, joined by key")


def out_option(name: str) -> Any:  # a typer option (typer types its options as Any)
    return typer.Option(Path(f"runs/{name}"), help="run directory (resumed if it exists)")


def parse_config(cls: type[ConfigT], quick: bool, settings: list[str] | None, **options: Any) -> ConfigT:
    """The config (quick or full) with the options given (None: keep) and `--set KEY=VALUE` pairs
    for any other field (tuples comma-separated, `none` for None, numbers and true/false as JSON)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    chosen = {k: v for k, v in options.items() if v is not None}
    for item in settings or []:
        key, sep, text = item.partition("=")
        if not sep or key not in fields:
            raise typer.BadParameter(
                f"{item!r}: expected KEY=VALUE with KEY one of {sorted(fields)}", param_hint="--set"
            )
        chosen[key] = _setting(text, fields[key])
    return replace(cls.quick() if quick else cls(), **chosen)


def _setting(text: str, hint: object) -> object:
    def scalar(x: str) -> object:
        try:
            return json.loads(x)
        except ValueError:
            return x

    if text.lower() in ("none", "null"):
        return None
    return tuple(scalar(x) for x in text.split(",") if x) if "tuple" in str(hint) else scalar(text)


def run_experiment(
    run_fn: RunFn[ConfigT], cfg: ConfigT, out: Path, *, workers: int | None = None, ray_address: str | None = None
) -> None:
    """Run an experiment from the command line: the configuration, its device and dtype, and
    --out are checked before anything is loaded or written; generation runs here, or on Ray
    workers (--workers, --ray-address); errors print as one line with exit code 2, then the
    summary."""
    from workbench.devices import as_device
    from workbench.executor import make_executor
    from workbench.experiments.checks import check_config, check_out
    from workbench.kvcheck import StackError
    from workbench.models import load_args

    start = time.perf_counter()
    from workbench.experiments.rundir import git_commit

    if git_commit().endswith("+dirty"):
        console.print(
            "[yellow]warning:[/yellow] the working tree has uncommitted changes, so the "
            "run records its commit as ...+dirty and cannot be rebuilt from it. Commit "
            "first for a run you mean to keep."
        )
    try:
        check_config(cfg)
        load_args(cfg)  # a bad dtype fails here, before Ray starts or weights are read
        if getattr(cfg, "device", None) is not None and getattr(cfg, "device_map", None) is not None:
            raise ValueError("pass --device or --device-map, not both")
        device = getattr(cfg, "device", None)
        if device is not None:
            as_device(device)
        check_out(out)
        with make_executor(workers, ray_address) as executor:
            run = run_fn(cfg, out, show_progress=True, executor=executor)
    except (ValueError, FileNotFoundError, ModuleNotFoundError, StackError) as err:
        fail(err)
    console.print(f"done in {time.perf_counter() - start:.0f} s: {run.path / 'summary.md'}, {run.path / 'report.html'}")
    typer.echo((run.path / "summary.md").read_text())
