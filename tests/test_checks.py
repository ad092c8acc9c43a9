"""Checks before compute: a bad configuration, --out or data against the model is an error
naming the problem and the fix, raised before anything is loaded, generated or written."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.experiments.checks import check_config, check_out, check_prompts_fit
from workbench.experiments.format import FormatConfig, run_format
from workbench.experiments.length import LengthConfig

TINY = FormatConfig.quick(
    model="tiny-instruct",
    limit=4,
    max_new_tokens=8,
    n_pairs=6,
    n_validation=2,
    layers=(1, 3),
    batch_size=4,
    search_prompts=(1, 2),
    search_keep=(1,),
)


def test_check_config_names_each_bad_field():
    check_config(FormatConfig())
    check_config(LengthConfig.quick())
    with pytest.raises(ValueError) as err:
        check_config(replace(FormatConfig(), max_new_tokens="abc", layers=(1, "x"), batch_size=0))
    message = str(err.value)
    assert "max_new_tokens='abc'" in message and "layers=(1, 'x')" in message
    assert "batch_size=0 must be at least 1" in message and "Fix:" in message
    check_config(replace(FormatConfig(), adjust=(1, 1.5), limit=None))  # an int where a float is declared


def test_check_out(tmp_path):
    assert check_out(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    (tmp_path / "a_file").write_text("x")
    for bad in (tmp_path / "a_file", tmp_path / "a_file" / "run"):
        with pytest.raises(ValueError, match="is a file"):
            check_out(bad)


def test_cli_bad_set_value_writes_nothing(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["reproduce", "format", "--model", "tiny-instruct", "--out", str(out), "--set", "max_new_tokens=abc"]
    )
    assert result.exit_code == 2, result.output
    assert "max_new_tokens='abc'" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_cli_out_pointing_at_a_file(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    result = CliRunner().invoke(app, ["reproduce", "length", "--model", "tiny-instruct", "--out", str(target)])
    assert result.exit_code == 2 and "is a file" in result.output, result.output
    assert target.read_text() == "keep me"


def test_tiny_model_with_the_full_test_set_fails_before_compute(tmp_path, tiny, monkeypatch):
    """tiny-instruct has a 512-token byte-level context: many IFEval prompts do not fit. That is
    found before any vector is derived, and no run directory is written."""
    import workbench as wb

    monkeypatch.setattr(wb, "cache_pairs", lambda *a, **k: pytest.fail("computed before the check"))
    with pytest.raises(ValueError, match="do not fit the context") as err:
        run_format(replace(TINY, limit=None, max_new_tokens=96), tmp_path / "run", model=tiny)
    assert "--truncate" in str(err.value)
    assert not (tmp_path / "run").exists()


def test_check_prompts_fit_and_truncate(tiny):
    n_ctx = tiny.cfg.n_ctx
    check_prompts_fit(tiny, [("short", "hello")], max_new_tokens=8)
    with pytest.raises(ValueError, match="1 of 2 prompts") as err:
        check_prompts_fit(tiny, [("short", "hello"), ("long", "x" * n_ctx)], max_new_tokens=8)
    assert "long (" in str(err.value)
    check_prompts_fit(tiny, [("long", "x" * n_ctx)], max_new_tokens=8, truncate=True)


def test_format_with_truncate_runs_prompts_longer_than_the_context(tmp_path, tiny):
    """With truncate the long prompts are cut at their start and the cut is recorded."""
    import json

    cfg = replace(
        TINY,
        limit=2,
        layers=(1,),
        n_pairs=4,
        n_validation=1,
        search_prompts=(1,),
        search_keep=(),
        max_new_tokens=500,
        truncate=True,
    )
    run = run_format(cfg, tmp_path / "run", model=tiny, show_progress=False)
    gens = [json.loads(l) for l in (run.path / "generations.jsonl").read_text().splitlines()]
    assert any(g.get("truncated_tokens", 0) > 0 for g in gens)


def test_cli_warns_when_the_tree_is_dirty(tmp_path, monkeypatch):
    from workbench.experiments import rundir

    monkeypatch.setattr(rundir, "git_commit", lambda: "abc123+dirty")
    result = CliRunner().invoke(
        app,
        [
            "reproduce",
            "format",
            "--model",
            "tiny-instruct",
            "--out",
            str(tmp_path / "run"),
            "--set",
            "max_new_tokens=abc",
        ],
    )
    assert "uncommitted changes" in result.output and result.exit_code == 2


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        (dict(search_prompts=(3, 8, 24), n_validation=8), "search_prompts[-1]=24"),
        (dict(search_prompts=(8, 3), search_keep=(1,)), "must be increasing"),
        (dict(search_prompts=(1, 2), search_keep=()), "needs one count"),
    ],
)
def test_a_search_plan_that_cannot_run_is_refused_before_any_compute(changes, said):
    with pytest.raises(ValueError, match=re.escape(said)):
        check_config(replace(FormatConfig(), **changes))
