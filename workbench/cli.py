"""The command line: one command per experiment, each writing a resumable run directory.

    workbench reproduce format --limit 20 --out runs/format
    workbench report runs/format
    workbench models
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(help="Instruction activation steering workbench (Stolfo et al., ICLR 2025).",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
reproduce = typer.Typer(help="Run one of the paper's experiments end to end.", no_args_is_help=True)
app.add_typer(reproduce, name="reproduce")
console = Console(stderr=True)


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@reproduce.command("format")
def reproduce_format(
    model: str = typer.Option("smollm2-135m-instruct", help="model name (wb.list_models())"),
    data: Optional[Path] = typer.Option(None, help="test file (IFEval JSONL); default: the 163 IFEval format prompts"),
    without_data: Optional[Path] = typer.Option(None, help="requests without instructions, joined by key"),
    limit: Optional[int] = typer.Option(None, help="use the first N test prompts (round-robin over instructions)"),
    quick: bool = typer.Option(False, help="smoke-sized run (minutes)"),
    out: Path = typer.Option(Path("runs/format"), help="run directory (resumed if it exists)"),
    batch_size: int = typer.Option(32, help="generation batch size"),
    max_new_tokens: Optional[int] = typer.Option(None, help="tokens per response"),
    seed: int = typer.Option(0),
) -> None:
    """The format experiment: vectors, layer search, the test set in four conditions."""
    _offline()
    from workbench.experiments.format import FormatConfig, run_format

    base = FormatConfig.quick() if quick else FormatConfig()
    overrides = dict(model=model, data=str(data) if data else None,
                     without_data=str(without_data) if without_data else None,
                     batch_size=batch_size, seed=seed)
    if limit is not None:
        overrides["limit"] = limit
    if max_new_tokens is not None:
        overrides["max_new_tokens"] = max_new_tokens
    cfg = replace(base, **overrides)
    start = time.perf_counter()
    try:
        run = run_format(cfg, out, show_progress=True)
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2)
    console.print(f"done in {time.perf_counter() - start:.0f} s: {run.path / 'summary.md'}, "
                  f"{run.path / 'report.html'}")
    typer.echo((run.path / "summary.md").read_text())


@app.command()
def report(run_dir: Path) -> None:
    """Rebuild report.html and summary.md of a run directory."""
    from workbench.report import write_report

    try:
        html_path, md_path = write_report(run_dir)
    except FileNotFoundError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2)
    console.print(f"wrote {html_path} and {md_path}")


@app.command()
def models() -> None:
    """The models that load offline."""
    from workbench.models import list_models

    typer.echo(list_models().to_string(index=False))


if __name__ == "__main__":
    app()
