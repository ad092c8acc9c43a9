"""The length, keywords, composition and transfer experiments end to end on the tiny models
(seconds each), resuming, transfer between equal widths and its refusal of unequal ones, and the
CLI of each on the bundled SmolLM2 (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from workbench.experiments.choice import choose_candidate
from workbench.experiments.composition import CompositionConfig, run_composition
from workbench.experiments.grid import NONE, raw_weight
from workbench.experiments.keywords import KeywordsConfig, run_keywords, word_match
from workbench.experiments.length import LengthConfig, at_most, run_length
from workbench.experiments.transfer import TransferConfig, run_transfer

ROOT = Path(__file__).resolve().parents[1]
# byte-level tiny models: short queries keep prompts inside their 512-token context
SMALL = dict(max_new_tokens=8, batch_size=8, max_query_chars=200)
LENGTH = LengthConfig.quick(
    model="tiny-instruct",
    limit=2,
    n_pairs=4,
    max_sentences=2,
    weights=(0, 20, 200),
    directions=("concise", "verbose"),
    all_classes=True,
    layers=(1, 3),
    n_validation=3,
    search_prompts=(1, 3),
    search_keep=(1,),
    **SMALL,
)
KEYWORDS = KeywordsConfig.quick(
    model="tiny-instruct", limit=1, n_pairs=3, n_validation=2, layers=(1, 3), weights=(0, 40, 400), **SMALL
)
COMPOSITION = CompositionConfig.quick(
    model="tiny-instruct", limit=2, n_pairs=4, n_length_pairs=4, layers=(1, 3), **SMALL
)
TRANSFER = TransferConfig.quick(
    source="tiny-instruct", target="tiny-base", limit=2, n_pairs=4, layers=(1, 3), **dict(SMALL, max_query_chars=300)
)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _state(run) -> dict:
    return json.loads((run.path / "run.json").read_text())


def _common_checks(run, tables: list[str]) -> None:
    for name in ["report.html", "summary.md", "scores.csv", *(f"tables/{t}.csv" for t in tables)]:
        assert (run.path / name).is_file(), name
    gens = _lines(run.path / "generations.jsonl")
    assert len({g["job"] for g in gens}) == len(gens)
    html = (run.path / "report.html").read_text()
    assert "<script" in html and "<table>" in html


def _resumes(fn, cfg, run, **models) -> None:
    """A second call finds everything done: nothing is generated again."""
    before = (run.path / "generations.jsonl").read_text()
    fn(cfg, run.path, show_progress=False, **models)
    assert (run.path / "generations.jsonl").read_text() == before


def test_length_end_to_end_on_tiny(tmp_path, tiny):
    run = run_length(LENGTH, tmp_path / "run", model=tiny, show_progress=False)
    tables = ["headline", "search_rounds", "search_choices", "by_weight_loose", "by_weight_at_most_n", "by_n_loose"]
    _common_checks(run, [*tables, "class_cosines"])
    state = _state(run)
    norms = {int(k): v for k, v in state["choices"]["residual_norms"].items()}
    assert sorted(norms) == state["choices"]["candidate_layers"] == [1, 3]  # measured at every candidate
    assert len(list((run.path / "vectors" / "length").glob("*.safetensors"))) == 5
    # the search: per direction and condition, 5 candidates (none + 2 layers x 2 weights) on 1
    # prompt, then none + the best on all 3; every round recorded in run.json and the table
    rounds = pd.read_csv(run.path / "tables/search_rounds.csv")
    assert len(state["choices"]["search_rounds"]) == len(rounds) == 4 * 5 + 4 * 2
    assert rounds.groupby("round")["n_prompts"].unique().map(list).to_dict() == {0: [1], 1: [3]}
    assert set(rounds["label"]) == {"none", *(f"add@L{layer}x{c}" for layer in (1, 3) for c in (20, 200))}
    choices = pd.read_csv(run.path / "tables/search_choices.csv")
    assert choices.to_dict("records") == pd.DataFrame(state["choices"]["chosen"]).to_dict("records")
    last = rounds[rounds["round"] == 1]
    for c in choices.itertuples():
        mine = last[(last["arm"] == c.arm) & (last["with_instruction"] == c.with_instruction)].set_index("label")
        none, best = mine.loc["none", "good"], mine.drop("none")["good"].max()
        if c.label == "none":  # steered only when its good rate beats none's strictly
            assert best <= none and c.layer == NONE and c.raw_weight == 0 and c.curve_layer in (1, 3)
        else:
            assert mine.loc[c.label, "good"] == best > none and c.curve_layer == c.layer
            assert c.raw_weight == raw_weight(c.weight, c.layer, norms, "norm_percent")
    # validation: 3 base queries disjoint from the test queries, varied n, each scored per job
    val = pd.read_csv(run.path / "validation_scores.csv")
    assert {"job", "loose", "degenerate", "arm", "layer", "weight", "max_n"} <= set(val)
    scores = pd.read_csv(run.path / "scores.csv")
    val_queries = set(val.loc[~val["with_instruction"], "prompt"])
    test_queries = set(scores.loc[~scores["with_instruction"], "prompt"])
    assert len(val_queries) == 3 and len(test_queries) == 2 and not val_queries & test_queries
    assert set(val["max_n"]) == {1, 2}
    gens = _lines(run.path / "generations.jsonl")
    # the test prompt without the instruction is generated once for all n, and no steering once for
    # both directions: 2 queries x (2 n + 1 plain) x (1 unsteered + 2 directions x 2 weights)
    assert len([g for g in gens if g["phase"] == "test"]) == 2 * 3 * 5
    assert len(scores) == 2 * 2 * 2 * 2 * 3  # queries x n x instruction x direction x weight
    assert set(scores["weight"]) == {0, 20, 200} and set(scores["arm"]) == {"concise", "verbose"}
    curve = {(c.arm, c.with_instruction): c.curve_layer for c in choices.itertuples()}
    steered = scores[scores["weight"] != 0]
    assert [curve[(a, w)] for a, w in zip(steered["arm"], steered["with_instruction"])] == steered["layer"].tolist()
    by_weight = pd.read_csv(run.path / "tables/by_weight_loose.csv")
    assert len(by_weight) == 2 * 2 * 3 and by_weight["n"].eq(4).all() and by_weight["n_clusters"].eq(2).all()
    assert (by_weight["ci_low"] <= by_weight["accuracy"]).all() and (
        by_weight["accuracy"] <= by_weight["ci_high"]
    ).all()
    assert (by_weight["loose_not_degenerate"] <= by_weight["accuracy"]).all()
    assert scores["loose_not_degenerate"].tolist() == (scores["loose"] & ~scores["degenerate"]).tolist()
    assert set(pd.read_csv(run.path / "tables/by_n_loose.csv")["max_n"]) == {1, 2}
    # the headline: no steering vs the chosen setting (none again where none was chosen)
    head = pd.read_csv(run.path / "tables/headline.csv")
    assert len(head) == 2 * 2 * 2 and head["n"].eq(4).all()
    assert (head["good"] <= head["loose"]).all() and (head["good_ci_low"] <= head["good"]).all()
    for h in head[head["steered"]].itertuples():
        c = choices[(choices["arm"] == h.arm) & (choices["with_instruction"] == h.with_instruction)].iloc[0]
        assert h.setting == c["label"]
    # at_most_n is the count of the verifier's own sentence tokenizer
    from workbench.scoring import count_sentences

    ok = [
        count_sentences(str(r)) <= n and bool(str(r).strip()) if isinstance(r, str) else False
        for r, n in zip(scores["response"], scores["max_n"])
    ]
    assert scores["at_most_n"].tolist() == ok
    # weight 0 is the unsteered generation itself; a large weight changes what is generated
    plain = scores[scores["weight"] == 0].set_index(["prompt", "arm"])["response"]
    pushed = scores[scores["weight"] == 200].set_index(["prompt", "arm"])["response"]
    assert (pushed != plain.reindex(pushed.index)).any()
    summary = (run.path / "summary.md").read_text()
    assert "at most n" in summary and "The search on validation prompts" in summary
    _resumes(run_length, LENGTH, run, model=tiny)


def test_length_validation_rows_vary_n_and_phrasing():
    from workbench.experiments.length import AT_MOST, validation_rows

    rows = validation_rows([f"Question {i}?" for i in range(24)], 5, seed=0)
    assert [r.extra["max_n"] for r in rows[:10]] == [1, 2, 3, 4, 5] * 2  # every round's prefix balanced
    assert all(r.kwargs == (at_most(r.extra["max_n"]),) for r in rows)
    assert len({r.prompt.removeprefix(r.prompt_without_instruction) for r in rows}) > len(AT_MOST)


def test_length_curve_at_the_chosen_layer_or_the_best_finalist():
    from workbench.experiments.search import Candidate, sweep_layers

    def curve_layers(rounds, chosen):
        return sweep_layers(rounds, chosen, ("arm", "with_instruction"))

    def line(round_, arm, layer, good, loose):
        return dict(round=round_, arm=arm, with_instruction=True, layer=layer, good=good, loose=loose, degenerate=0.0)

    rounds = [
        line(0, "concise", 9, 1.0, 1.0),
        line(1, "concise", NONE, 0.5, 0.5),
        line(1, "concise", 1, 0.25, 0.5),
        line(1, "concise", 3, 0.25, 0.75),
        line(1, "verbose", NONE, 0.0, 0.0),
        line(1, "verbose", 2, 0.5, 0.5),
    ]
    chosen = {("concise", True): Candidate(), ("verbose", True): Candidate(2, "add", 20.0)}
    # no steering won for concise: its best finalist (tied on good, more loose) gives the curve's layer
    assert curve_layers(rounds, chosen) == {("concise", True): 3, ("verbose", True): 2}
    assert curve_layers([line(0, "concise", NONE, 0.5, 0.5)], {("concise", True): Candidate()}) == {
        ("concise", True): None
    }


def test_at_most_n_is_ifevals_less_than_n_plus_one():
    from workbench.data import IFEvalRow
    from workbench.scoring import score_ifeval

    row = IFEvalRow("k", "q", ("length_constraints:number_sentences",), (at_most(2),))
    scores = score_ifeval([row] * 3, ["One.", "One. Two.", "One. Two. Three."])
    assert scores["strict"].tolist() == [True, True, False]


def test_a_truncated_generation_is_redone_on_resume(tmp_path, tiny):
    cfg = replace(LENGTH, limit=1, weights=(0, 20), directions=("concise",))
    run = run_length(cfg, tmp_path / "run", model=tiny, show_progress=False)
    path = run.path / "generations.jsonl"
    full = {g["job"] for g in _lines(path)}
    text = path.read_text()
    path.write_text(text[: len(text) - 20])  # the last record cut mid-line, as by a kill
    run_length(cfg, tmp_path / "run", model=tiny, show_progress=False)
    again = [g["job"] for g in _lines(path)]
    assert sorted(again) == sorted(full)


def test_keywords_end_to_end_on_tiny(tmp_path, tiny):
    run = run_keywords(KEYWORDS, tmp_path / "run", model=tiny, show_progress=False)
    _common_checks(
        run, ["headline", "weight_sweep_loose", "weight_sweep_word_match", "search_rounds", "search_choices"]
    )
    state = _state(run)
    # one search per arm and condition, every round recorded: 5 candidates on 1 prompt, then 2 on 2
    rounds = pd.read_csv(run.path / "tables/search_rounds.csv")
    assert len(state["choices"]["search_rounds"]) == len(rounds) == 6 * 5 + 6 * 2
    assert rounds.groupby("round")["n_prompts"].unique().map(list).to_dict() == {0: [1], 1: [2]}
    assert set(rounds["label"]) == {"none", *(f"add@L{layer}x{c}" for layer in (1, 3) for c in (40, 400))}
    # the choice agrees with the last round: steering only when its good rate beats none's strictly
    choices = pd.read_csv(run.path / "tables/search_choices.csv")
    assert len(choices) == 6 and {"label", "layer", "weight", "sweep_layer"} <= set(choices)
    assert choices.to_dict("records") == pd.DataFrame(state["choices"]["chosen"]).to_dict("records")
    last = rounds[rounds["round"] == 1]
    for c in choices.itertuples():
        mine = last[(last["arm"] == c.arm) & (last["with_instruction"] == c.with_instruction)].set_index("label")
        none, best = mine.loc["none", "good"], mine.drop("none")["good"].max()
        if c.label == "none":
            assert best <= none and c.layer == NONE and c.weight == 0 and c.sweep_layer in (1, 3)
        else:
            assert mine.loc[c.label, "good"] == best > none and c.sweep_layer == c.layer
    val = pd.read_csv(run.path / "validation_scores.csv")
    assert {"job", "loose", "degenerate", "arm", "layer", "weight"} <= set(val)
    scores = pd.read_csv(run.path / "scores.csv")
    assert set(scores["arm"]) == {"include", "exclude_subtract", "exclude_vector"}
    assert set(scores["instruction_id"]) == {"keywords:existence", "keywords:forbidden_words"}
    assert set(scores["weight"]) == {0, 40, 400}  # the whole grid at the chosen layer
    # one spec per word, the weight split among them; subtraction carries a negative weight
    gens = {g["job"]: g for g in _lines(run.path / "generations.jsonl")}
    sub = [g for g in gens.values() if g["arm"] == "exclude_subtract" and g["steered"]]
    assert sub and all("w=-" in g["steering"] for g in sub)
    inc = [g for g in gens.values() if g["arm"] == "include" and g["steered"]]
    assert inc and all("add include/" in g["steering"] and "w=-" not in g["steering"] for g in inc)
    vec = [g for g in gens.values() if g["arm"] == "exclude_vector" and g["steered"]]
    assert vec and all("add exclude/" in g["steering"] for g in vec)
    head = pd.read_csv(run.path / "tables/headline.csv")
    assert len(head) == 3 * 2 * 2  # arm x instruction x steered
    assert {"accuracy", "good", "degenerate", "word_match"} <= set(head)
    summary = (run.path / "summary.md").read_text()
    assert ".291" in summary and "vs weight" in summary and "The search on validation prompts" in summary
    _resumes(run_keywords, KEYWORDS, run, model=tiny)


def test_keywords_sweeps_where_the_search_chose_or_its_best_finalist():
    from workbench.experiments.search import Candidate, sweep_layers

    rounds = pd.DataFrame(
        dict(
            round=[0, 1, 1, 1, 1, 1, 1],
            arm=["include"] * 4 + ["exclude_subtract"] * 3,
            with_instruction=[False] * 7,
            label=["add@L9x40", "none", "add@L1x40", "add@L3x40", "add@L5x40", "none", "add@L2x40"],
            layer=[9, NONE, 1, 3, 5, NONE, 2],
            good=[1.0, 0.5, 0.25, 0.25, 0.0, 0.0, 0.5],
            loose=[1.0, 0.5, 0.5, 0.75, 1.0, 0.0, 0.5],
            degenerate=[0.0] * 7,
        )
    )
    chosen = {("include", False): Candidate(), ("exclude_subtract", False): Candidate(2, "add", 40.0)}
    # no steering won for include: its best finalist (tied on good, more loose) is swept, not round 0's
    assert sweep_layers(rounds, chosen, ("arm", "with_instruction")) == {
        ("include", False): 3,
        ("exclude_subtract", False): 2,
    }


def _keyword_test_file(path: Path) -> Path:
    """The shape of the paper's keyword test files: one line per word, each carrying its IFEval
    key (so keys repeat), plus old_prompt and instruction_id_list_old."""
    lines = []
    for key, iid, arg, words, base in [
        (1531, "keywords:existence", "keywords", ["atlantis", "constable"], "Write a proposal."),
        (1147, "keywords:forbidden_words", "forbidden_words", ["field", "thanks"], "Rewrite a note."),
    ]:
        lines += [
            dict(
                key=key,
                prompt=f'{base} Use the word "{w}".',
                instruction_id_list=[iid],
                kwargs=[{arg: [w]}],
                instruction_id_list_for_eval=[iid],
                prompt_without_instruction=base,
                old_prompt=f"{base} Mind the words {' and '.join(words)}.",
                instruction_id_list_old=[iid],
            )
            for w in words
        ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_keywords_reads_a_test_file_with_repeated_keys(tmp_path, tiny):
    from workbench.experiments.keywords import _test_rows

    cfg = replace(
        KEYWORDS,
        data=str(_keyword_test_file(tmp_path / "kw.jsonl")),
        limit=2,
        arms=("include", "exclude_subtract"),
        weights=(0, 40),
    )
    rows = _test_rows(cfg)
    assert [r.row_id for r in rows] == ["1531#1", "1531#2", "1147#1", "1147#2"]
    run = run_keywords(cfg, tmp_path / "run", model=tiny, show_progress=False)
    scores = pd.read_csv(run.path / "scores.csv")
    assert set(scores["row_id"]) == {"1531#1", "1531#2", "1147#1", "1147#2"}
    assert set(scores["key"]) == {1531, 1147}
    # both words of a key count: the headline pairs lines by row id, not by the shared key
    head = pd.read_csv(run.path / "tables/headline.csv")
    assert len(head) == 2 * 2 * 2 and head["n"].eq(2).all()
    gens = _lines(run.path / "generations.jsonl")
    assert {g["row_id"] for g in gens if g["phase"] == "test"} <= {"1531#1", "1531#2", "1147#1", "1147#2"}
    _resumes(run_keywords, cfg, run, model=tiny)


def test_word_match_uses_word_boundaries():
    from workbench.data import IFEvalRow

    inc = IFEvalRow("a", "p", ("keywords:existence",), ({"keywords": ["cat", "dog"]},))
    exc = IFEvalRow("b", "p", ("keywords:forbidden_words",), ({"forbidden_words": ["cat"]},))
    assert word_match(inc, "A Cat and a DOG.") and not word_match(inc, "concatenate the dogs")
    assert word_match(exc, "concatenate") and not word_match(exc, "the cat sat")


def test_choose_layer_over_weights_and_steered_only():
    scored = pd.DataFrame(
        dict(
            g=["a"] * 6,
            layer=[NONE, NONE, 1, 1, 3, 3],
            weight=[0.0, 0.0, 5.0, 5.0, 10.0, 10.0],
            loose=[True, True, False, True, True, True],
            degenerate=[False, False, False, False, True, False],
        )
    )
    _, by_layer = choose_candidate(scored, group=["g"])
    assert by_layer["layer"].item() == NONE  # layer 3 is degenerate, layer 1 worse than none
    _, steered = choose_candidate(scored, group=["g"], steered_only=True)
    assert steered["layer"].item() == 1 and steered["dropped_degenerate"].item() == [3]
    _, by_weight = choose_candidate(scored, group=["g"], candidate="weight", none_value=0.0, steered_only=True)
    assert by_weight["weight"].item() == 5.0 and "weights [10.0] dropped" in by_weight["reason"].item()


def _search_checks(run, group: list[str], n_groups: int, n_candidates: int) -> pd.DataFrame:
    """The search's rounds are recorded, and its choice per group is the one the rounds imply:
    the best steered finalist on all prompts only when its good rate strictly beats no
    steering's. Returns the choices."""
    state = _state(run)
    rounds = pd.read_csv(run.path / "tables/search_rounds.csv")
    assert len(state["choices"]["search_rounds"]) == len(rounds)
    assert len(rounds[rounds["round"] == 0]) == n_groups * n_candidates  # every candidate runs first
    assert (rounds.groupby(group)["round"].max() == rounds["round"].max()).all()
    choices = pd.read_csv(run.path / "tables/search_choices.csv")
    assert choices[[*group, "label", "layer", "mode", "strength"]].to_dict("records") == state["choices"]["chosen"]
    assert len(choices) == n_groups
    last = rounds[rounds["round"] == rounds["round"].max()]
    for c in choices.to_dict("records"):
        g = last[(last[group] == pd.Series({k: c[k] for k in group})).all(axis=1)]
        none = g.loc[g["label"] == "none", "good"].item()
        steered = g[g["label"] != "none"]
        if c["label"] == "none":
            assert steered.empty or steered["good"].max() <= none
        else:
            best = g.loc[g["label"] == c["label"], "good"].item()
            assert best > none and best == steered["good"].max()
    val = pd.read_csv(run.path / "validation_scores.csv")
    assert {"good", "loose", "degenerate"} <= set(rounds.columns) and {"loose", "degenerate"} <= set(val.columns)
    return choices


def test_composition_end_to_end_on_tiny(tmp_path, tiny):
    run = run_composition(COMPOSITION, tmp_path / "run", model=tiny, show_progress=False)
    _common_checks(run, ["conditions", "per_instruction", "search_rounds", "search_choices"])
    state = _state(run)
    assert state["choices"]["length"]["layer"] == 2
    # none + 2 layers x (adjust 1, add 1); lowercase with and without the instruction
    choices = _search_checks(run, ["instruction_id", "with_instruction"], 2, 5)
    chosen = {(c["instruction_id"], c["with_instruction"]): c for c in choices.to_dict("records")}
    scores = pd.read_csv(run.path / "scores.csv")
    assert len(scores) == 2 * 2 * 4  # prompts x instruction x arm
    assert scores.groupby(["with_instruction", "arm"]).size().eq(2).all()
    gens = {g["job"]: g for g in _lines(run.path / "generations.jsonl")}
    for line in scores.to_dict("records"):  # the test jobs use the chosen layer, mode and strength
        c = chosen[(line["format_instruction"], line["with_instruction"])]
        assert (line["format_layer"], line["format_mode"], line["format_strength"]) == (
            c["layer"],
            c["mode"],
            c["strength"],
        )
        steering = gens[line["job"]]["steering"]
        if line["arm"] in ("format", "both"):
            # two specs in one row's list when the search steers format
            shaped = f"{c['mode']} change_case:english_lowercase @L{c['layer']} w={line['format_weight']:g}"
            assert (shaped in steering) == (c["label"] != "none")
        assert steering.count("add length/extremely_concise @L2") == (line["arm"] in ("length", "both"))
    cond = pd.read_csv(run.path / "tables/conditions.csv")
    assert {"format_accuracy", "length_accuracy", "both_accuracy", "good_accuracy", "degenerate"} <= set(cond.columns)
    assert len(cond) == 8
    summary = (run.path / "summary.md").read_text()
    assert "Format and length at once" in summary and "The search on validation prompts" in summary
    _resumes(run_composition, COMPOSITION, run, model=tiny)


def test_composition_jobs_steer_at_the_chosen_candidate(tiny_vec):
    import workbench as wb
    from workbench.experiments.composition import composed_jobs, composed_rows
    from workbench.experiments.search import Candidate

    iid = "change_case:english_lowercase"
    rows = composed_rows(["Tell me about cats."], [iid], 2, seed=0)
    cand = Candidate(1, "add", 2.0)
    lengthen = wb.Steering(tiny_vec, 3, "add", 5.0)
    jobs = composed_jobs(rows, {(iid, False): Candidate(), (iid, True): cand}, {iid: tiny_vec}, lengthen)
    by = {(j.tags["with_instruction"], j.tags["arm"]): j for j in jobs}
    assert len(jobs) == 2 * 4 and by[(False, "format")].steering == () and by[(False, "both")].steering == (lengthen,)
    shape = by[(True, "format")].steering
    assert [(s.layer, s.mode, s.weight) for s in shape] == [(1, "add", 2.0 * float(tiny_vec.norms[1]))]
    assert by[(True, "both")].steering == (*shape, lengthen) and by[(True, "length")].steering == (lengthen,)
    assert by[(True, "both")].tags["format_strength"] == 2.0 and by[(True, "none")].steering == ()


def test_transfer_between_equal_widths_on_tiny(tmp_path, tiny, tiny_base):
    run = run_transfer(TRANSFER, tmp_path / "run", source=tiny, target=tiny_base, show_progress=False)
    _common_checks(run, ["conditions_loose", "per_instruction_loose", "search_rounds", "search_choices"])
    state = _state(run)
    assert state["identity"]["model"] == "tiny-base" and state["choices"]["source"]["name"] == "tiny-instruct"
    assert "linear_maps" not in state["choices"]
    import workbench as wb

    carried_dir, source_dir = run.path / "vectors" / "carried", run.path / "vectors" / "source"
    carried = sorted(carried_dir.rglob("*.safetensors"))
    assert carried
    for path in carried:  # equal widths and depths: the source's own directions and z-bars
        vec = wb.SteeringVector.load(path)
        src = wb.SteeringVector.load(source_dir / path.relative_to(carried_dir))
        assert vec.meta["model"] == "tiny-instruct" and vec.meta["carried_to"]["model"] == "tiny-base"
        assert vec.layers == (1, 3) and not vec.meta["carried_to"]["mapped"]
        for layer in vec.layers:
            assert float(vec.direction(layer) @ src.direction(layer)) > 0.9999
            assert abs(vec.z_bar(layer) - src.z_bar(layer)) < 1e-5
        # `add`'s unit: the source's raw norm at the matched (here the same) layer
        assert vec.norms.tolist() == pytest.approx([float(src.norms[src.layers.index(l)]) for l in vec.layers])
    # the source's vectors really steered the target during the search
    gens = _lines(run.path / "generations.jsonl")
    assert any(g["arm"] == "source" and g["steering"] for g in gens if g["phase"] == "validation")
    # per arm x instruction x condition: none + 2 layers at adjust 1 (the config's mode)
    n_groups = 2 * len(set(pd.read_csv(run.path / "scores.csv")["instruction_id"])) * 2
    choices = _search_checks(run, ["arm", "instruction_id", "with_instruction"], n_groups, 3)
    assert set(choices["mode"]) <= {"none", "adjust"}
    chosen = {(c["arm"], c["instruction_id"], c["with_instruction"]): c for c in choices.to_dict("records")}
    scores = pd.read_csv(run.path / "scores.csv")
    gens_by_job = {g["job"]: g for g in gens}
    for line in scores[scores["arm"] != "none"].to_dict("records"):  # the test jobs use the choice
        c = chosen[(line["arm"], line["instruction_id"], line["with_instruction"])]
        assert (line["layer"], line["mode"], line["strength"]) == (c["layer"], c["mode"], c["strength"])
        steering = gens_by_job[line["job"]]["steering"]
        assert (f"{c['mode']} " in steering and f"@L{c['layer']} w=1 " in steering) == (c["label"] != "none")
    cond = pd.read_csv(run.path / "tables/conditions_loose.csv")
    assert set(cond["arm"]) == {"none", "own", "source"} and len(cond) == 6
    assert (run.path / "tables/conditions_good.csv").is_file()
    # each vector against the target alone, paired by prompt: the counts recomputed from scores
    for metric in ("loose", "good"):
        paired = pd.read_csv(run.path / f"tables/mcnemar_{metric}.csv")
        assert len(paired) == 4 and set(paired["arm"]) == {"own", "source"}
        for line in paired.to_dict("records"):
            cond = scores[scores["with_instruction"] == line["with_instruction"]]
            alone = cond[cond["arm"] == "none"].set_index("row_id")[metric].astype(bool)
            steered = cond[cond["arm"] == line["arm"]].set_index("row_id")[metric].astype(bool).reindex(alone.index)
            assert line["n_pairs"] == len(alone) and line["n_unpaired"] == 0
            assert line["b01"] == int((~alone & steered).sum()) and line["b10"] == int((alone & ~steered).sum())
            assert line["acc_unsteered"] == pytest.approx(alone.mean())
            assert 0 <= line["pvalue"] <= 1 or (line["b01"] + line["b10"] == 0)
    summary = (run.path / "summary.md").read_text()
    assert "Gemma-2-2B" in summary and "The search on validation prompts" in summary
    assert "Each vector against the target alone" in summary
    _resumes(run_transfer, TRANSFER, run, source=tiny, target=tiny_base)


def _force_choice(monkeypatch, cand) -> None:
    """The search runs and records its rounds as ever, but every group gets `cand` (a random
    tiny model rarely beats no steering, so the steered test path needs a planted choice)."""
    from workbench.experiments import validation

    real = validation.successive_halving

    def forced(*args, **kwargs):
        return dict.fromkeys(real(*args, **kwargs), cand)

    monkeypatch.setattr(validation, "successive_halving", forced)


def test_transfer_searches_add_in_units_of_the_raw_norm(tiny, tiny_base, tmp_path, monkeypatch):
    import workbench as wb
    from workbench.experiments.search import Candidate

    _force_choice(monkeypatch, Candidate(3, "add", 2.0))
    cfg = replace(TRANSFER, mode="add", strengths=(0.5, 2.0), limit=1)
    run = run_transfer(cfg, tmp_path / "run", source=tiny, target=tiny_base, show_progress=False)
    rounds = pd.read_csv(run.path / "tables/search_rounds.csv")
    steered = rounds[rounds["label"] != "none"]
    assert set(steered["mode"]) == {"add"} and set(steered["strength"]) == {0.5, 2.0}
    assert {c["label"] for c in _state(run)["choices"]["chosen"]} == {"add@L3x2"}
    scores = pd.read_csv(run.path / "scores.csv")
    gens = {g["job"]: g for g in _lines(run.path / "generations.jsonl")}
    for line in scores[scores["arm"] != "none"].to_dict("records"):
        folder = "carried" if line["arm"] == "source" else "own"
        name = line["instruction_id"].replace(":", "__")
        vec = wb.SteeringVector.load(run.path / "vectors" / folder / f"{name}.safetensors")
        assert line["weight"] == pytest.approx(2.0 * float(vec.norms[vec.layers.index(3)]), rel=1e-5)
        assert f"add {line['arm']}/{line['instruction_id']} @L3 w=" in gens[line["job"]]["steering"]
    with pytest.raises(ValueError, match="mode must be one of"):
        run_transfer(replace(cfg, mode="scale"), tmp_path / "run2", source=tiny, target=tiny_base)


def test_composition_tests_at_a_steered_choice(tiny, tmp_path, monkeypatch):
    from workbench.experiments.search import Candidate

    _force_choice(monkeypatch, Candidate(3, "adjust", 1.0))
    run = run_composition(replace(COMPOSITION, limit=1), tmp_path / "run", model=tiny, show_progress=False)
    scores = pd.read_csv(run.path / "scores.csv")
    gens = {g["job"]: g for g in _lines(run.path / "generations.jsonl")}
    for line in scores.to_dict("records"):
        shaped = "adjust change_case:english_lowercase @L3 w=1 " in gens[line["job"]]["steering"]
        assert shaped == (line["arm"] in ("format", "both"))
        assert (line["format_layer"], line["format_mode"], line["format_strength"]) == (3, "adjust", 1.0)


@pytest.fixture(scope="module")
def tiny_narrow():
    """A tiny base model of width 32 (the bundled tiny models are 64 wide), bridged with provenance."""
    from workbench.models import bridge
    from workbench.tiny import tiny_hf_model

    hf, tokenizer = tiny_hf_model("base", d_model=32)
    model = bridge(hf, tokenizer, name="tiny-base-32", kind="base", weight_hash="tiny-base-32", source="test")
    yield model
    model.reset_hooks(including_permanent=True)


def test_transfer_refuses_unequal_widths_without_a_map(tmp_path, tiny, tiny_narrow):
    with pytest.raises(ValueError, match=r"d_model 32.*d_model 64.*widths differ.*fit_map"):
        run_transfer(TRANSFER, tmp_path / "run", source=tiny, target=tiny_narrow)
    with pytest.raises(ValueError, match="lacks the maps"):
        run_transfer(replace(TRANSFER, linear_map=str(tmp_path)), tmp_path / "run2", source=tiny, target=tiny_narrow)


def test_transfer_with_a_fitted_map_between_unequal_widths(tmp_path, tiny, tiny_narrow):
    cfg = replace(TRANSFER, fit_map=True, limit=1)
    run = run_transfer(cfg, tmp_path / "run", source=tiny, target=tiny_narrow, show_progress=False)
    import workbench as wb

    maps = _state(run)["choices"]["linear_maps"]
    assert [(m["source_layer"], m["target_layer"]) for m in maps] == [(1, 1), (3, 3)]
    # fitted on neutral texts, one row per aligned position (many per text), whole texts held out
    assert all(m["n_train"] > cfg.map_texts and m["method"] == "ridge" for m in maps)
    for path in (run.path / "vectors" / "carried").rglob("*.safetensors"):
        vec = wb.SteeringVector.load(path)
        assert vec.d_model == 32 and vec.meta["carried_to"]["mapped"]
        assert bool((vec.norms > 0).all()) and bool(vec.norms.isfinite().all())  # the mapped raw vector's
        assert abs(float(vec.direction(1).norm()) - 1) < 1e-5
        assert vec.meta["carried_to"]["z_bar_from"] == "target"
    # a map saved elsewhere is used the same way
    again = run_transfer(
        replace(cfg, fit_map=False, linear_map=str(run.path / "maps")),
        tmp_path / "run2",
        source=tiny,
        target=tiny_narrow,
        show_progress=False,
    )
    a = pd.read_csv(run.path / "scores.csv")["response"].tolist()
    b = pd.read_csv(again.path / "scores.csv")["response"].tolist()
    assert a == b


def test_cli_set_parses_config_fields():
    import typer

    from workbench.commands import parse_config

    cfg = parse_config(
        LengthConfig,
        True,
        ["max_new_tokens=12", "weights=0,5", "layers=none", "baseline=opposite"],
        model="tiny-instruct",
        limit=None,
    )
    assert (cfg.max_new_tokens, cfg.weights, cfg.layers, cfg.baseline, cfg.limit) == (12, (0, 5), None, "opposite", 2)
    assert parse_config(KeywordsConfig, True, ["limit=none"]).limit is None  # --set may clear a quick value
    for bad in (["nonsense=1"], ["QUICK={}"], ["limit"]):
        with pytest.raises(typer.BadParameter, match="max_new_tokens"):
            parse_config(LengthConfig, False, bad)


def _cli(name: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", "reproduce", name, *args],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, args, heading",
    [
        ("length", ["--limit", "1", "--set", "max_sentences=2", "--set", "max_new_tokens=24"], "at most n"),
        (
            "keywords",
            [
                "--limit",
                "1",
                "--set",
                "max_new_tokens=12",
                "--set",
                "n_pairs=2",
                "--set",
                "arms=include,exclude_subtract",
            ],
            "Include / exclude",
        ),
        ("composition", ["--limit", "2", "--set", "max_new_tokens=24"], "Format and length"),
        ("transfer", ["--limit", "1", "--fit-map", "--set", "max_new_tokens=12"], "Transfer"),
    ],
)
def test_cli_on_bundled_smollm2(tmp_path, name, args, heading):
    done = _cli(name, "--quick", "--out", str(tmp_path / "run"), *args)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((tmp_path / "run" / "run.json").read_text())
    assert state["identity"]["experiment"] == name
    assert heading in done.stdout
    models = {state["model_info"]["name"], state["choices"].get("source", {}).get("name")}
    assert "smollm2-135m-instruct" in models
