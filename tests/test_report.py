"""The HTML report of a run renders offline in headless Chromium: plots drawn, no console errors."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from workbench.experiments.format import FormatConfig, run_format
from workbench.plots import find_chromium
from workbench.report import write_report

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny):
    cfg = FormatConfig.quick(model="tiny-instruct", limit=3, max_new_tokens=6, n_pairs=4, layers=(1, 2), batch_size=8)
    return run_format(cfg, tmp_path_factory.mktemp("report") / "run", model=tiny, show_progress=False)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [find_chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_is_self_contained(tiny_run):
    page = (tiny_run.path / "report.html").read_text()
    assert not re.search(r"<script[^>]+src=['\"]http", page)
    assert page.count("Plotly.newPlot") >= 3
    summary = (tiny_run.path / "summary.md").read_text()
    assert "Gemma-2-2B-IT" in summary and "tiny-instruct (this run)" in summary


def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    url = (tiny_run.path / "report.html").as_uri()
    dom = _chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    figures = (tiny_run.path / "report.html").read_text().count("Plotly.newPlot")
    # plotly draws each figure into an SVG of class main-svg: all of them rendered
    assert dom.stdout.count('class="main-svg"') >= figures
    errors = [l for l in dom.stderr.splitlines() if "CONSOLE" in l and ("Error" in l or "Uncaught" in l)]
    assert not errors, errors

    png = tmp_path / "shot.png"
    shot = _chromium(tmp_path, "--window-size=1000,1600", f"--screenshot={png}", url)
    assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
    from PIL import Image

    pixels = Image.open(png).convert("L").getextrema()
    assert pixels[0] < 100 and pixels[1] > 200, "the screenshot is blank"


def test_report_command_rebuilds_and_refuses_non_runs(tiny_run, tmp_path):
    (tiny_run.path / "report.html").unlink()
    html_path, md_path = write_report(tiny_run.path)
    assert html_path.exists() and md_path.exists()
    with pytest.raises(FileNotFoundError, match="run.json"):
        write_report(tmp_path)


def test_figures_are_exported_and_indexed_to_their_run(tiny_run, tmp_path):
    import json

    from workbench.report import write_figures

    paths = write_figures(tiny_run.path, tmp_path / "figs", formats=("png",))
    assert len(paths) >= 3 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    index = json.loads((tmp_path / "figs" / "format_index.json").read_text())
    assert index["run_dir"] == str(tiny_run.path) and index["files"] == [p.name for p in paths]


def test_figures_command_regenerates_every_analysis(tiny_run, tmp_path, monkeypatch):
    """`workbench figures` with no argument: every analyses/*/run into figures/<experiment>/."""
    import shutil

    from typer.testing import CliRunner

    from workbench.cli import app

    shutil.copytree(tiny_run.path, tmp_path / "analyses" / "format" / "run")
    (tmp_path / "analyses" / "notes").mkdir()  # a folder without a run is not an analysis
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["figures"])
    assert result.exit_code == 0, result.output
    pngs = sorted((tmp_path / "figures" / "format").glob("*.png"))
    assert len(pngs) >= 3 and (tmp_path / "figures" / "format" / "format_index.json").exists()
    result = CliRunner().invoke(app, ["figures", str(tmp_path / "analyses" / "notes")])
    assert result.exit_code != 0 and "run.json" in result.output
