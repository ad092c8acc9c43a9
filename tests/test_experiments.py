"""The format experiment end to end: tiny model in seconds, resume after kill -9, refusal to
resume another configuration, and the CLI on the bundled SmolLM2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from workbench.experiments.format import FormatConfig, run_format

ROOT = Path(__file__).resolve().parents[1]
TINY = FormatConfig.quick(
    model="tiny-instruct",
    limit=4,
    max_new_tokens=8,
    n_pairs=6,
    layers=(1, 3),
    batch_size=4,
    n_validation=3,
    search_prompts=(2, 3),
    search_keep=(2,),
)


def _lines(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines()]


def test_format_end_to_end_on_tiny(tmp_path, tiny):
    run = run_format(TINY, tmp_path / "run", model=tiny, show_progress=False)
    state = json.loads((run.path / "run.json").read_text())
    assert state["identity"]["config"]["limit"] == 4
    assert state["model_info"]["weight_hash"] == tiny.wb_info.weight_hash
    from workbench.models import lock_hash

    assert state["lock_hash"] == state["model_info"]["lock_hash"] == lock_hash() != "no lock file"
    assert state["choices"]["candidate_layers"] == [1, 3]
    assert {"vectors", "validation", "test"} <= set(state["timings"])
    for name in [
        "report.html",
        "summary.md",
        "scores.csv",
        "tables/two_by_two_loose.csv",
        "tables/mcnemar_loose.csv",
        "tables/two_by_two_good.csv",
        "tables/mcnemar_good.csv",
        "tables/search_rounds.csv",
        "tables/search_choices.csv",
        "validation_scores.csv",
    ]:
        assert (run.path / name).is_file(), name
    gens = _lines(run.path / "generations.jsonl")
    # the search: 4 instructions x 2 conditions; round 0 runs every candidate (none + 2 layers x
    # (adjust, add)) on 2 prompts, round 1 none + the 2 best steered on 1 more prompt
    rounds = pd.read_csv(run.path / "tables" / "search_rounds.csv")
    assert len(rounds) == 4 * 2 * (5 + 3)
    assert (rounds.groupby("round")["n_prompts"].max() == [2, 3]).all()
    n_val = sum(g["phase"] == "validation" for g in gens)
    # a candidate's earlier prompts are not redone, and the unsteered request without its
    # instruction (the same 3 queries for all 4 instructions) is generated once, not 4 times
    assert n_val == 4 * 2 * (5 * 2 + 3 * 1) - 3 * 3
    val = pd.read_csv(run.path / "validation_scores.csv")
    assert len(val) == 4 * 2 * (5 * 2 + 3 * 1)  # yet every job is scored against its own row
    shared = (
        val[(val["label"] == "none") & ~val["with_instruction"]]
        if "label" in val
        else val[(val["layer"] == -1) & ~val["with_instruction"]]
    )
    assert shared.groupby("prompt")["instruction_id"].nunique().eq(4).all()
    assert len({g["job"] for g in gens}) == len(gens)
    scores = pd.read_csv(run.path / "scores.csv")
    # every test prompt is scored in all four conditions
    assert scores.groupby("key").size().eq(4).all()
    assert (scores["good"] == (scores["loose"] & ~scores["degenerate"])).all()
    table = pd.read_csv(run.path / "tables/two_by_two_loose.csv")
    assert len(table) == 4 and table["n"].eq(4).all()
    chosen = state["choices"]["chosen"]
    assert len(chosen) == 8 and all(c["layer"] in (-1, 1, 3) for c in chosen)
    per = pd.read_csv(run.path / "tables/per_instruction_loose.csv")
    assert {"layer", "mode", "strength"} <= set(per.columns)
    assert len(state["choices"]["search_rounds"]) == len(rounds)
    assert "<script" in (run.path / "report.html").read_text()

    # a second call finds everything done: nothing is generated again
    before = (run.path / "generations.jsonl").read_text()
    run_format(TINY, tmp_path / "run", model=tiny, show_progress=False)
    assert (run.path / "generations.jsonl").read_text() == before


def test_resume_refuses_another_configuration(tmp_path, tiny):
    small = replace(TINY, limit=1, layers=(1,))
    run_format(small, tmp_path / "run", model=tiny, show_progress=False).close()
    with pytest.raises(ValueError, match="max_new_tokens"):
        run_format(replace(small, max_new_tokens=9), tmp_path / "run", model=tiny)


def test_a_truncated_last_line_is_dropped_and_redone(tmp_path, tiny):
    small = replace(TINY, limit=1, layers=(1,))
    run = run_format(small, tmp_path / "run", model=tiny, show_progress=False)
    path = run.path / "generations.jsonl"
    full = _lines(path)
    text = path.read_text()
    path.write_text(text[: len(text) - 25])  # the last record cut mid-line, as by a kill
    run_format(small, tmp_path / "run", model=tiny, show_progress=False)
    again = _lines(path)
    assert [g["job"] for g in again[:-1]] == [g["job"] for g in full[:-1]]
    assert Counter(g["job"] for g in again) == Counter(g["job"] for g in full)


def test_job_ids_name_condition_candidate_and_row():
    from workbench.data import IFEvalRow
    from workbench.experiments.format import _test_jobs
    from workbench.experiments.search import Candidate

    row = IFEvalRow("1001", "Hi. No commas.", ("punctuation:no_comma",), ({},), "Hi.")
    twice = IFEvalRow("1001", "Hi. No commas.", ("punctuation:no_comma",), ({},), "Hi.", row_id="1001#2")
    chosen = {("punctuation:no_comma", w): Candidate() for w in (False, True)}
    jobs = _test_jobs([row, twice], {"punctuation:no_comma": None}, chosen)
    assert [j.id for j in jobs] == [
        "test/no_instruction/none/1001",
        "test/instruction/none/1001",
        "test/no_instruction/none/1001#2",
        "test/instruction/none/1001#2",
    ]
    assert [j.tags["row_id"] for j in jobs] == ["1001", "1001", "1001#2", "1001#2"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", "reproduce", "format", *args]


def test_kill_9_mid_run_loses_and_repeats_nothing(tmp_path):
    out = tmp_path / "run"
    args = _cli(
        "--model",
        "tiny-instruct",
        "--quick",
        "--limit",
        "6",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "24",
        "--out",
        str(out),
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gens = out / "generations.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if gens.exists() and len(gens.read_text().splitlines()) >= 16:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed: make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [l for l in gens.read_text().splitlines(keepends=True) if l.endswith("\n")]
    finished = [json.loads(l) for l in before]
    assert finished, "nothing was saved before the kill"

    done = subprocess.run(args, cwd=ROOT, env=env, check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    after = _lines(gens)
    ids = [g["job"] for g in after]
    assert len(ids) == len(set(ids)), "a finished generation was repeated"
    by_id = {g["job"]: g for g in after}
    for g in finished:  # every generation finished before the kill is kept as it was
        assert by_id[g["job"]] == g
    assert (out / "summary.md").exists()


@pytest.mark.slow
def test_cli_on_bundled_smollm2_with_limit(tmp_path):
    out = tmp_path / "run"
    args = _cli("--quick", "--limit", "2", "--max-new-tokens", "12", "--out", str(out))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run(args, cwd=ROOT, env=env, check=False, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "run.json").read_text())
    assert state["model_info"]["name"] == "smollm2-135m-instruct"
    assert state["model_info"]["n_layers"] == 30
    scores = pd.read_csv(out / "scores.csv")
    assert scores["key"].nunique() == 2 and len(scores) == 8
    assert "Test set" in done.stdout

    bad = subprocess.run(
        _cli("--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")),
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "missing.jsonl" in bad.stderr
