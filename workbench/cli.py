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
    batch_size: int = typer.Option(64, help="generation batch size"),
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


def _configured(cls, quick: bool, **overrides):
    """The config (quick or full) with the options given on the command line (None: default)."""
    base = cls.quick() if quick else cls()
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _weights(text: Optional[str]) -> Optional[tuple[float, ...]]:
    return tuple(float(w) for w in text.split(",")) if text else None


def _reproduce(run_fn, cfg, out: Path, **models) -> None:
    """Run an experiment from the command line: errors as one line and exit code 2, then the summary."""
    _offline()
    start = time.perf_counter()
    try:
        run = run_fn(cfg, out, show_progress=True, **models)
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2)
    console.print(f"done in {time.perf_counter() - start:.0f} s: {run.path / 'summary.md'}, "
                  f"{run.path / 'report.html'}")
    typer.echo((run.path / "summary.md").read_text())


MODEL = typer.Option("smollm2-135m-instruct", help="model name (wb.list_models())")
QUICK = typer.Option(False, help="smoke-sized run (minutes)")
BATCH = typer.Option(None, help="generation batch size")
TOKENS = typer.Option(None, help="tokens per response")
SEED = typer.Option(None, help="seed of the query split and pair sampling")
WEIGHTS = typer.Option(None, help="comma-separated weight grid, e.g. 0,5,10,20,40")
UNIT = typer.Option(None, help="weight unit: norm_percent (percent of the layer's mean residual norm) or raw")
MAX_CHARS = typer.Option(None, help="drop base queries longer than this (a small model's context)")


@reproduce.command("length")
def reproduce_length(
    model: str = MODEL,
    limit: Optional[int] = typer.Option(None, help="evaluation base queries (default 50)"),
    quick: bool = QUICK,
    out: Path = typer.Option(Path("runs/length"), help="run directory (resumed if it exists)"),
    layer: Optional[int] = typer.Option(None, help="steering layer (default: relative depth 0.375)"),
    weights: Optional[str] = WEIGHTS,
    weight_unit: Optional[str] = UNIT,
    baseline: Optional[str] = typer.Option(None, help="plain (class vs bare query, the paper) or opposite"),
    max_query_chars: Optional[int] = MAX_CHARS,
    batch_size: Optional[int] = BATCH,
    max_new_tokens: Optional[int] = TOKENS,
    seed: Optional[int] = SEED,
) -> None:
    """Length: conciseness vector, "at most n sentences", a weight grid."""
    from workbench.experiments.length import LengthConfig, run_length

    _reproduce(run_length, _configured(
        LengthConfig, quick, model=model, limit=limit, layer=layer, weights=_weights(weights),
        weight_unit=weight_unit, baseline=baseline, max_query_chars=max_query_chars,
        batch_size=batch_size, max_new_tokens=max_new_tokens, seed=seed), out)


@reproduce.command("keywords")
def reproduce_keywords(
    model: str = MODEL,
    data: Optional[Path] = typer.Option(None, help="test file (IFEval JSONL); default: IFEval's keyword prompts"),
    without_data: Optional[Path] = typer.Option(None, help="requests without instructions, joined by key"),
    limit: Optional[int] = typer.Option(None, help="first N test prompts of each kind"),
    quick: bool = QUICK,
    out: Path = typer.Option(Path("runs/keywords"), help="run directory (resumed if it exists)"),
    n_validation: Optional[int] = typer.Option(None, help="validation prompts per file"),
    weights: Optional[str] = WEIGHTS,
    weight_unit: Optional[str] = UNIT,
    max_query_chars: Optional[int] = MAX_CHARS,
    batch_size: Optional[int] = BATCH,
    max_new_tokens: Optional[int] = TOKENS,
    seed: Optional[int] = SEED,
) -> None:
    """Keywords: include / exclude a word by word vectors; layer and weight searched on validation."""
    from workbench.experiments.keywords import KeywordsConfig, run_keywords

    _reproduce(run_keywords, _configured(
        KeywordsConfig, quick, model=model, data=str(data) if data else None,
        without_data=str(without_data) if without_data else None, limit=limit,
        n_validation=n_validation, weights=_weights(weights), weight_unit=weight_unit,
        max_query_chars=max_query_chars, batch_size=batch_size, max_new_tokens=max_new_tokens,
        seed=seed), out)


@reproduce.command("composition")
def reproduce_composition(
    model: str = MODEL,
    limit: Optional[int] = typer.Option(None, help="test prompts (default 40)"),
    quick: bool = QUICK,
    out: Path = typer.Option(Path("runs/composition"), help="run directory (resumed if it exists)"),
    format_instructions: Optional[str] = typer.Option(None, help="comma-separated IFEval format ids"),
    length_layer: Optional[int] = typer.Option(None, help="conciseness layer (default: relative depth 0.375)"),
    length_weight: Optional[float] = typer.Option(None, help="conciseness weight c"),
    weight_unit: Optional[str] = UNIT,
    max_query_chars: Optional[int] = MAX_CHARS,
    batch_size: Optional[int] = BATCH,
    max_new_tokens: Optional[int] = TOKENS,
    seed: Optional[int] = SEED,
) -> None:
    """Composition: a format vector and the conciseness vector at once, each at its own layer."""
    from workbench.experiments.composition import CompositionConfig, run_composition

    ids = tuple(format_instructions.split(",")) if format_instructions else None
    _reproduce(run_composition, _configured(
        CompositionConfig, quick, model=model, limit=limit, format_instructions=ids,
        length_layer=length_layer, length_weight=length_weight, weight_unit=weight_unit,
        max_query_chars=max_query_chars, batch_size=batch_size, max_new_tokens=max_new_tokens,
        seed=seed), out)


@reproduce.command("transfer")
def reproduce_transfer(
    source: str = typer.Option("smollm2-135m-instruct", help="model the vectors come from"),
    target: str = typer.Option("gemma3-270m", "--target", "--model", help="model steered"),
    data: Optional[Path] = typer.Option(None, help="test file (IFEval JSONL); default: the 163 IFEval format prompts"),
    without_data: Optional[Path] = typer.Option(None, help="requests without instructions, joined by key"),
    limit: Optional[int] = typer.Option(None, help="use the first N test prompts (round-robin over instructions)"),
    quick: bool = QUICK,
    out: Path = typer.Option(Path("runs/transfer"), help="run directory (resumed if it exists)"),
    fit_map: bool = typer.Option(False, help="unequal widths: fit a linear map per matched layer pair"),
    linear_map: Optional[Path] = typer.Option(None, help="unequal widths: directory of saved maps src{s}_tgt{t}"),
    z_bar_from: Optional[str] = typer.Option(None, help="equal widths: z-bar of the source (the paper) or target"),
    max_query_chars: Optional[int] = MAX_CHARS,
    batch_size: Optional[int] = BATCH,
    max_new_tokens: Optional[int] = TOKENS,
    seed: Optional[int] = SEED,
) -> None:
    """Transfer: the source model's format vectors steering the target, beside the target's own."""
    from workbench.experiments.transfer import TransferConfig, run_transfer

    _reproduce(run_transfer, _configured(
        TransferConfig, quick, source=source, target=target, data=str(data) if data else None,
        without_data=str(without_data) if without_data else None, limit=limit, fit_map=fit_map,
        linear_map=str(linear_map) if linear_map else None, z_bar_from=z_bar_from,
        max_query_chars=max_query_chars, batch_size=batch_size, max_new_tokens=max_new_tokens,
        seed=seed), out)


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
