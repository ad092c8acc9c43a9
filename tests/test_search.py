"""The shared search: successive halving over (layer, mode, strength) on planted outcomes, so
the right candidate, the rounds and the tie rules are known in advance."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from workbench.data import IFEvalRow
from workbench.experiments.jobs import Job
from workbench.experiments.rundir import RunDir
from workbench.experiments.search import Candidate, Halving, candidate_grid, successive_halving


class _Run:
    """Enough of a RunDir for the search: tables and records."""

    def __init__(self, path):
        self.path, self.state = path, {"choices": {}}

    file = RunDir.file

    def record(self, key, value):
        self.state["choices"][key] = json.loads(json.dumps(value))


def _rows(group, n):
    return [IFEvalRow(f"{group}/{i}", f"p{i}", ("detectable_format:title",), ({},), f"q{i}") for i in range(n)]


def _jobs_for(group, rows, cand):
    return [
        Job(f"{group}/{cand.label}/{r.row_id}", r.prompt, r, (), dict(label=cand.label, i=int(r.key.split("/")[1])))
        for r in rows
    ]


def test_halving_finds_the_planted_best_and_records_rounds(tmp_path):
    cands = candidate_grid([2, 4, 6], adjust=(1.0,), add=(0.5, 1.0))
    best = Candidate(4, "add", 1.0)
    # per candidate: followed on a fixed share of prompts; the best one loops on 1 in 6
    share = {c.label: 0.2 + 0.05 * i for i, c in enumerate(cands)}
    share[best.label] = 0.9
    seen = []

    def evaluate(jobs, round_):
        seen.append((round_, len(jobs)))
        return pd.DataFrame(
            [
                dict(
                    job=j.id,
                    loose=(j.tags["i"] * 0.37) % 1 < share[j.tags["label"]],
                    degenerate=j.tags["label"] == best.label and j.tags["i"] % 6 == 5,
                )
                for j in jobs
            ]
        )

    plan = Halving(prompts=(3, 6, 12), keep=(3, 1))
    groups = {("a", False): _rows("a", 12), ("b", True): _rows("b", 12)}
    run = _Run(tmp_path)
    choices = successive_halving(run, groups, cands, _jobs_for, evaluate, plan=plan, group_names=("name", "flag"))
    assert choices == {("a", False): best, ("b", True): best}
    # round sizes: all 10 candidates x 3 prompts, then none + 3 kept x 6, then none + 1 x 12
    assert seen == [(0, 2 * 10 * 3), (1, 2 * 4 * 6), (2, 2 * 2 * 12)]
    rounds = pd.read_csv(tmp_path / "tables" / "search_rounds.csv")
    assert rounds["round"].tolist().count(0) == 20 and set(rounds["n_prompts"]) == {3, 6, 12}
    assert set(rounds["name"]) == {"a", "b"} and set(rounds["flag"]) == {False, True}
    assert len(run.state["choices"]["search_rounds"]) == len(rounds)
    final = rounds[(rounds["round"] == 2) & (rounds["label"] == best.label)].iloc[0]
    assert final["n"] == 12 and final["degenerate"] == pytest.approx(2 / 12)
    assert final["good"] < final["loose"]  # a degenerate output counts as not followed


def test_steering_must_beat_no_steering_strictly(tmp_path):
    cands = candidate_grid([1], adjust=(1.0,))

    def evaluate(jobs, round_):  # everything follows: a tie goes to no steering
        return pd.DataFrame([dict(job=j.id, loose=True, degenerate=False) for j in jobs])

    choices = successive_halving(
        _Run(tmp_path), {"g": _rows("g", 4)}, cands, _jobs_for, evaluate, plan=Halving(prompts=(2, 4), keep=(1,))
    )
    assert choices == {"g": Candidate()}


def test_degenerate_outputs_do_not_count_as_followed(tmp_path):
    cands = candidate_grid([1], adjust=(1.0,))

    def evaluate(jobs, round_):  # the steered candidate "follows" by looping every time
        return pd.DataFrame(
            [
                dict(
                    job=j.id, loose=j.tags["label"] != "none" or j.tags["i"] == 0, degenerate=j.tags["label"] != "none"
                )
                for j in jobs
            ]
        )

    choices = successive_halving(
        _Run(tmp_path), {"g": _rows("g", 4)}, cands, _jobs_for, evaluate, plan=Halving(prompts=(2, 4), keep=(1,))
    )
    assert choices == {"g": Candidate()}


def test_bad_plans_and_groups_are_refused(tmp_path):
    with pytest.raises(ValueError, match="one keep per round"):
        Halving(prompts=(2, 4), keep=(1, 1))
    with pytest.raises(ValueError, match="fewer"):
        successive_halving(
            _Run(tmp_path),
            {"g": _rows("g", 3)},
            candidate_grid([1]),
            _jobs_for,
            lambda jobs, r: None,
            plan=Halving(prompts=(2, 4), keep=(1,)),
        )
    with pytest.raises(ValueError, match="start with no steering"):
        successive_halving(
            _Run(tmp_path),
            {"g": _rows("g", 4)},
            candidate_grid([1])[1:],
            _jobs_for,
            lambda jobs, r: None,
            plan=Halving(prompts=(2, 4), keep=(1,)),
        )


def test_add_strength_is_in_units_of_the_raw_norm(tiny_vec):
    layer = tiny_vec.layers[1]
    norm = float(tiny_vec.norms[1])
    assert Candidate(layer, "add", 2.0).weight(tiny_vec) == pytest.approx(2 * norm)
    assert Candidate(layer, "adjust", 0.5).weight(tiny_vec) == 0.5


def test_ties_at_good_zero_go_to_the_candidate_that_follows(tmp_path):
    """On few prompts every candidate may be at good = 0; the one that makes the model follow
    (while looping) goes on, not the first of the grid that changes nothing."""
    cands = candidate_grid([1, 2, 3], adjust=(1.0,))
    follows = Candidate(3, "adjust", 1.0)

    def evaluate(jobs, round_):
        rows = []
        for j in jobs:
            hit = j.tags["label"] == follows.label
            # round 0: it follows but loops; later prompts (i >= 2) it follows cleanly
            rows.append(dict(job=j.id, loose=hit, degenerate=hit and j.tags["i"] < 2))
        return pd.DataFrame(rows)

    choices = successive_halving(
        _Run(tmp_path), {"g": _rows("g", 6)}, cands, _jobs_for, evaluate, plan=Halving(prompts=(2, 6), keep=(1,))
    )
    assert choices == {"g": follows}
