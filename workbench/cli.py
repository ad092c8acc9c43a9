"""The command line: one command per experiment, each writing a resumable run directory.

From a shell:

    workbench reproduce format --limit 20 --out runs/format
    workbench reproduce format --device cuda --dtype bfloat16 --workers 4     # 4 GPUs, one model each
    workbench reproduce format --device-map auto                              # one model over all GPUs
    workbench reproduce format --ray-address auto                             # a Ray cluster's GPUs
    workbench report runs/format
    workbench models
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from workbench.commands import (
    DATA,
    DEVICE,
    DEVICE_MAP,
    DTYPE,
    MODEL,
    QUICK,
    RAY_ADDRESS,
    SET,
    WITHOUT,
    WORKERS,
    console,
    fail,
    offline,
    out_option,
    parse_config,
    run_experiment,
)

app = typer.Typer(
    help="Instruction activation steering workbench (Stolfo et al., ICLR 2025).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
reproduce = typer.Typer(help="Run one of the paper's experiments end to end.", no_args_is_help=True)
app.add_typer(reproduce, name="reproduce")


@reproduce.callback()
def _reproduce_offline() -> None:
    """Every experiment runs offline: set before any experiment module imports the hub libraries."""
    offline()


@reproduce.command("format")
def reproduce_format(
    model: str = MODEL,
    data: Path | None = typer.Option(None, help="test file (IFEval JSONL); default: the 163 IFEval format prompts"),
    without_data: Path | None = WITHOUT,
    limit: int | None = typer.Option(None, help="use the first N test prompts (round-robin over instructions)"),
    quick: bool = QUICK,
    out: Path = out_option("format"),
    batch_size: int = typer.Option(64, help="generation batch size"),
    max_new_tokens: int | None = typer.Option(None, help="tokens per response"),
    seed: int = typer.Option(0),
    truncate: bool = typer.Option(
        False, help="cut the start of prompts too long for the context (the count is recorded per generation)"
    ),
    settings: list[str] | None = SET,
    device: str | None = DEVICE,
    dtype: str | None = DTYPE,
    device_map: str | None = DEVICE_MAP,
    workers: int | None = WORKERS,
    ray_address: str | None = RAY_ADDRESS,
) -> None:
    """The format experiment: vectors, layer search, the test set in four conditions."""
    offline()
    from workbench.experiments.format import FormatConfig, run_format

    cfg = parse_config(
        FormatConfig,
        quick,
        settings,
        model=model,
        data=data and str(data),
        without_data=without_data and str(without_data),
        batch_size=batch_size,
        seed=seed,
        limit=limit,
        max_new_tokens=max_new_tokens,
        truncate=truncate or None,
        device=device,
        dtype=dtype,
        device_map=device_map,
    )
    run_experiment(run_format, cfg, out, workers=workers, ray_address=ray_address)


@reproduce.command("length")
def reproduce_length(
    model: str = MODEL,
    quick: bool = QUICK,
    out: Path = out_option("length"),
    limit: int | None = typer.Option(None, help="evaluation base queries (default 50)"),
    weights: str | None = typer.Option(None, help="weights searched and curved, e.g. 0,5,10,20,40 (0 = none)"),
    settings: list[str] | None = SET,
    device: str | None = DEVICE,
    dtype: str | None = DTYPE,
    device_map: str | None = DEVICE_MAP,
    workers: int | None = WORKERS,
    ray_address: str | None = RAY_ADDRESS,
) -> None:
    """Length: the conciseness vector on "answer using at most n sentences"; layer x weight searched on validation, then the weight curve at the chosen layer."""
    from workbench.experiments.length import LengthConfig, run_length

    grid = tuple(float(w) for w in weights.split(",")) if weights else None
    run_experiment(
        run_length,
        parse_config(
            LengthConfig,
            quick,
            settings,
            model=model,
            limit=limit,
            weights=grid,
            device=device,
            dtype=dtype,
            device_map=device_map,
        ),
        out,
        workers=workers,
        ray_address=ray_address,
    )


@reproduce.command("keywords")
def reproduce_keywords(
    model: str = MODEL,
    quick: bool = QUICK,
    out: Path = out_option("keywords"),
    limit: int | None = typer.Option(None, help="first N test prompts of each kind"),
    data: Path | None = DATA,
    without_data: Path | None = WITHOUT,
    settings: list[str] | None = SET,
    device: str | None = DEVICE,
    dtype: str | None = DTYPE,
    device_map: str | None = DEVICE_MAP,
    workers: int | None = WORKERS,
    ray_address: str | None = RAY_ADDRESS,
) -> None:
    """Keywords: include / exclude a word with word vectors; layer x weight searched jointly on validation (successive halving)."""
    from workbench.experiments.keywords import KeywordsConfig, run_keywords

    cfg = parse_config(
        KeywordsConfig,
        quick,
        settings,
        model=model,
        limit=limit,
        data=data and str(data),
        without_data=without_data and str(without_data),
        device=device,
        dtype=dtype,
        device_map=device_map,
    )
    run_experiment(run_keywords, cfg, out, workers=workers, ray_address=ray_address)


@reproduce.command("composition")
def reproduce_composition(
    model: str = MODEL,
    quick: bool = QUICK,
    out: Path = out_option("composition"),
    limit: int | None = typer.Option(None, help="test prompts (default 40)"),
    format_instructions: str | None = typer.Option(None, help="comma-separated IFEval format ids to compose"),
    settings: list[str] | None = SET,
    device: str | None = DEVICE,
    dtype: str | None = DTYPE,
    device_map: str | None = DEVICE_MAP,
    workers: int | None = WORKERS,
    ray_address: str | None = RAY_ADDRESS,
) -> None:
    """Composition: a format vector and the conciseness vector at once, each at its own layer."""
    from workbench.experiments.composition import CompositionConfig, run_composition

    ids = tuple(format_instructions.split(",")) if format_instructions else None
    cfg = parse_config(
        CompositionConfig,
        quick,
        settings,
        model=model,
        limit=limit,
        format_instructions=ids,
        device=device,
        dtype=dtype,
        device_map=device_map,
    )
    run_experiment(run_composition, cfg, out, workers=workers, ray_address=ray_address)


@reproduce.command("transfer")
def reproduce_transfer(
    source: str = typer.Option("smollm2-135m-instruct", help="model the vectors come from"),
    target: str = typer.Option("gemma3-270m", "--target", "--model", help="model steered"),
    quick: bool = QUICK,
    out: Path = out_option("transfer"),
    limit: int | None = typer.Option(None, help="first N test prompts (round-robin over instructions)"),
    fit_map: bool = typer.Option(False, help="unequal widths: fit a linear map per matched layer pair"),
    linear_map: Path | None = typer.Option(None, help="unequal widths: a directory of maps src{s}_tgt{t}"),
    data: Path | None = DATA,
    without_data: Path | None = WITHOUT,
    settings: list[str] | None = SET,
    device: str | None = DEVICE,
    dtype: str | None = DTYPE,
    device_map: str | None = DEVICE_MAP,
    workers: int | None = WORKERS,
    ray_address: str | None = RAY_ADDRESS,
) -> None:
    """Transfer: the source model's format vectors steering the target, beside the target's own."""
    from workbench.experiments.transfer import TransferConfig, run_transfer

    cfg = parse_config(
        TransferConfig,
        quick,
        settings,
        source=source,
        target=target,
        limit=limit,
        fit_map=fit_map,
        linear_map=linear_map and str(linear_map),
        data=data and str(data),
        without_data=without_data and str(without_data),
        device=device,
        dtype=dtype,
        device_map=device_map,
    )
    run_experiment(run_transfer, cfg, out, workers=workers, ray_address=ray_address)


@app.command()
def report(run_dir: Path) -> None:
    """Rebuild report.html and summary.md of a run directory."""
    from workbench.report import write_report

    try:
        html_path, md_path = write_report(run_dir)
    except FileNotFoundError as err:
        fail(err)
    console.print(f"wrote {html_path} and {md_path}")


@app.command()
def figures(
    run_dirs: list[Path] = typer.Argument(None, help="run directories; none: every analyses/*/run"),
    out: Path = typer.Option(Path("figures"), help="output directory; each run's figures go to OUT/<experiment>/"),
    html: bool = typer.Option(False, help="also write HTML pages sharing one plotly.min.js"),
) -> None:
    """Regenerate runs' figures as PNG (and HTML) files, indexed back to each run record."""
    from workbench.report import write_figures

    run_dirs = run_dirs or sorted(Path("analyses").glob("*/run"))
    if not run_dirs:
        raise typer.BadParameter("no run directory given and none under analyses/*/run")
    for run_dir in run_dirs:
        if not (run_dir / "run.json").is_file():
            raise typer.BadParameter(f"{run_dir} has no run.json: not a workbench run directory")
        experiment = json.loads((run_dir / "run.json").read_text())["identity"]["experiment"]
        paths = write_figures(run_dir, out / experiment, formats=("png", "html") if html else ("png",))
        console.print(f"{run_dir}: wrote {len(paths)} files to {out / experiment}")


@app.command()
def models() -> None:
    """The models that load offline."""
    from workbench.models import list_models

    typer.echo(list_models().to_string(index=False))


@app.command()
def view(
    run_dir: Path,
    out: Path | None = typer.Option(None, help="where to write the page (default RUN_DIR/viewer.html)"),
    open_browser: bool = typer.Option(False, "--open", help="also open it in the default browser"),
) -> None:
    """Write a self-contained HTML viewer of a run's generations (side by side, filterable) and print its path."""
    from workbench.viewer import write_viewer

    try:
        path = write_viewer(run_dir, out)
    except FileNotFoundError as err:
        fail(err)
    typer.echo(str(path))
    if open_browser:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


if __name__ == "__main__":
    app()
