"""The generations viewer: the joined table, the page's data, and filtering in a real headless
Chromium (the page's own JavaScript runs; the DOM after it is counted)."""

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from workbench import viewer
from workbench.cli import app
from workbench.plots import find_chromium

ROOT = Path(__file__).resolve().parent.parent


def _run(tmp_path: Path) -> Path:
    """A small run directory in the format experiment's current schema: two prompts, both
    conditions, no steering and two layers x two strengths; one corrupt line."""
    run = tmp_path / "run"
    run.mkdir()
    gens, scores = [], []
    for key, iid in (("val/title/0", "detectable_format:title"), ("val/lower/0", "change_case:english_lowercase")):
        for cond in (False, True):
            settings = [(-1, "none", 0.0)] + [(layer, "adjust", w) for layer in (12, 26) for w in (1.0, 2.0)]
            for layer, mode, w in settings:
                job = f"validation/{cond}/{layer}/{w}/{key}"
                steered = layer >= 0
                label = f"{mode} {iid} @L{layer} w={w:g}" if steered else "none"
                text = f"<<T>> answer {key} {cond} {layer} {w}" if steered else f"plain answer {key} {cond}"
                if key == "val/lower/0" and layer == 26 and w == 2.0 and not cond:
                    text = "tricky </script><b>not bold</b> & done"
                gens.append(
                    dict(
                        job=job,
                        phase="validation",
                        key=key,
                        row_id=key,
                        instruction_id=iid,
                        with_instruction=cond,
                        layer=layer,
                        mode=mode,
                        strength=w,
                        steered=steered,
                        prompt=f"request {key}" + (" Use a title." if cond else ""),
                        response=text,
                        n_tokens=7,
                        finish_reason="eos",
                        steering=label,
                    )
                )
                scores.append(
                    dict(
                        job=job,
                        strict=layer == 26,
                        loose=layer == 26,
                        degenerate=w == 2.0,
                        degenerate_reason="repeated_line" if w == 2.0 else "",
                        ppl=3.5,
                    )
                )
    lines = [json.dumps(g) for g in gens]
    lines.insert(3, '{"job": "cut short')
    (run / "generations.jsonl").write_text("\n".join(lines) + "\n")
    pd.DataFrame(scores).to_csv(run / "validation_scores.csv", index=False)
    return run


def test_viewer_records_join_verdicts(tmp_path):
    run = _run(tmp_path)
    df = viewer.viewer_records(run)
    assert len(df) == 2 * 2 * 5
    assert df.layer.isna().sum() == 4 and set(df.layer.dropna()) == {12, 26}
    assert set(df.weight[df.steered]) == {1.0, 2.0}
    assert df.loose.sum() == 8 and df.degenerate.sum() == 8
    assert (df.degenerate_reason[df.degenerate] == "repeated_line").all()
    _, bad = viewer.read_generations(run)
    assert bad == 1


def test_page_data_points_each_answer_at_its_references(tmp_path):
    run = _run(tmp_path)
    path = viewer.write_viewer(run)
    assert path == run / "viewer.html"
    page = path.read_text()
    assert "<script src" not in page and "http" not in page.split('id="data"')[0]  # nothing fetched
    assert page.count("</script>") == 2  # the response's "</script>" is escaped inside the data
    data = json.loads(
        re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.DOTALL)
        .group(1)
        .replace("<\\/", "</")
    )
    rows = data["rows"]
    assert data["meta"]["skipped_lines"] == 1 and len(rows) == 20
    r = next(r for r in rows if r["key"] == "val/title/0" and r["layer"] == 12 and r["weight"] == 1.0 and not r["cond"])
    base, base_with, steered_with = (rows[r[k]] for k in ("base", "base_with", "steered_with"))
    assert not base["steered"] and not base["cond"] and base["key"] == r["key"]
    assert not base_with["steered"] and base_with["cond"]
    assert steered_with["cond"] and steered_with["label"] == r["label"]
    assert r["verdicts"] == {"strict": False, "loose": False} and r["degenerate"] is False


def _dom(page: Path, fragment: str) -> str:
    out = subprocess.run(
        [
            find_chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.resolve().as_uri() + fragment,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _matched(dom: str) -> int:
    return int(re.search(r'id="count" data-matched="(\d+)"', dom).group(1))


@pytest.mark.parametrize(
    "fragment, expected",
    [
        ("", 16),  # default: every steered answer
        ("#layer=none", 4),  # the unsteered ones
        ("#layer=", 20),  # all
        ("#instruction=detectable_format:title&layer=26", 4),  # 2 conditions x 2 weights
        ("#layer=26&weight=2", 4),
        ("#condition=without&layer=12&weight=1", 2),
        ("#verdict=pass", 8),
        ("#degenerate=yes&instruction=change_case:english_lowercase", 4),
        ("#text=tricky", 1),
    ],
)
def test_filters_in_headless_chromium(tmp_path, fragment, expected):
    page = viewer.write_viewer(_run(tmp_path))
    dom = _dom(page, fragment)
    assert _matched(dom) == expected
    assert dom.count('class="gen"') == expected  # under one page: every match is drawn


def test_escaped_text_shows_literally(tmp_path):
    page = viewer.write_viewer(_run(tmp_path))
    dom = _dom(page, "#text=tricky")
    assert "tricky &lt;/script&gt;&lt;b&gt;not bold&lt;/b&gt; &amp; done" in dom
    assert "<b>not bold</b>" not in dom


def test_cli_view_writes_and_prints(tmp_path):
    run = _run(tmp_path)
    result = CliRunner().invoke(app, ["view", str(run), "--out", str(tmp_path / "v.html")])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path / "v.html") and (tmp_path / "v.html").is_file()
    missing = CliRunner().invoke(app, ["view", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "generations.jsonl" in missing.output


@pytest.mark.slow
def test_committed_format_run(tmp_path):
    """The real run: the page's count for title at layer 24 (the layer its search chose without
    the instruction) equals the table's, pages of 100."""
    run = ROOT / "analyses" / "format" / "run"
    df = viewer.viewer_records(run)
    page = viewer.write_viewer(run, tmp_path / "viewer.html")
    want = int(((df.instruction == "detectable_format:title") & (df.layer == 24)).sum())
    dom = _dom(page, "#instruction=detectable_format:title&layer=24")
    assert _matched(dom) == want > 0
    dom = _dom(page, "")
    assert _matched(dom) == int(df.steered.sum()) and dom.count('class="gen"') == 100
