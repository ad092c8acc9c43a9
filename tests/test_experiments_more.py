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
    **SMALL,
)
KEYWORDS = KeywordsConfig.quick(
    model="tiny-instruct", limit=1, n_pairs=3, n_validation=1, layers=(1, 3), weights=(0, 40, 400), **SMALL
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
    _common_checks(run, ["by_weight_loose", "by_weight_at_most_n", "by_n_loose", "class_cosines"])
    state = _state(run)
    layer = state["choices"]["layer"]
    assert layer == round(0.375 * 4)
    norms = {int(k): v for k, v in state["choices"]["residual_norms"].items()}
    assert [w["raw"] for w in state["choices"]["weights"]] == [
        raw_weight(c, layer, norms, "norm_percent") for c in LENGTH.weights
    ]
    assert len(list((run.path / "vectors" / "length").glob("*.safetensors"))) == 5
    gens = _lines(run.path / "generations.jsonl")
    # the prompt without the instruction is generated once for all n, and no steering once for
    # both directions: 2 queries x (2 n + 1 plain) x (1 unsteered + 2 directions x 2 weights)
    assert len(gens) == 2 * 3 * 5
    scores = pd.read_csv(run.path / "scores.csv")
    assert len(scores) == 2 * 2 * 2 * 2 * 3  # queries x n x instruction x direction x weight
    assert set(scores["weight"]) == {0, 20, 200} and set(scores["arm"]) == {"concise", "verbose"}
    by_weight = pd.read_csv(run.path / "tables/by_weight_loose.csv")
    assert len(by_weight) == 2 * 2 * 3 and by_weight["n"].eq(4).all() and by_weight["n_clusters"].eq(2).all()
    assert (by_weight["ci_low"] <= by_weight["accuracy"]).all() and (
        by_weight["accuracy"] <= by_weight["ci_high"]
    ).all()
    assert (by_weight["loose_not_degenerate"] <= by_weight["accuracy"]).all()
    assert scores["loose_not_degenerate"].tolist() == (scores["loose"] & ~scores["degenerate"]).tolist()
    assert set(pd.read_csv(run.path / "tables/by_n_loose.csv")["max_n"]) == {1, 2}
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
    assert "at most n" in (run.path / "summary.md").read_text()
    _resumes(run_length, LENGTH, run, model=tiny)


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
        run,
        ["headline", "weight_sweep_loose", "weight_sweep_word_match", "layer_search_choices", "weight_search_choices"],
    )
    state = _state(run)
    layers = {(c["arm"], c["with_instruction"]): c["layer"] for c in state["choices"]["layer_search"]}
    assert len(layers) == 3 * 2 and set(layers.values()) <= {1, 3, NONE}
    weights = {c["weight"] for c in state["choices"]["weight_search"]}
    assert weights <= {0, 40, 400}
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
    summary = (run.path / "summary.md").read_text()
    assert ".291" in summary and "vs weight" in summary
    _resumes(run_keywords, KEYWORDS, run, model=tiny)


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


def test_composition_end_to_end_on_tiny(tmp_path, tiny):
    run = run_composition(COMPOSITION, tmp_path / "run", model=tiny, show_progress=False)
    _common_checks(run, ["conditions", "per_instruction", "layer_search_choices"])
    state = _state(run)
    assert state["choices"]["length"]["layer"] == 2
    scores = pd.read_csv(run.path / "scores.csv")
    assert len(scores) == 2 * 2 * 4  # prompts x instruction x arm
    assert scores.groupby(["with_instruction", "arm"]).size().eq(2).all()
    gens = {g["job"]: g for g in _lines(run.path / "generations.jsonl")}
    both = [gens[j] for j in scores.loc[scores["arm"] == "both", "job"]]
    for g, layer in zip(both, scores.loc[scores["arm"] == "both", "format_layer"]):
        # two specs in one row's list when the search steers format; the length spec always
        assert g["steering"].count("add length/extremely_concise @L2") == 1
        assert ("adjust change_case:english_lowercase" in g["steering"]) == (layer != NONE)
    cond = pd.read_csv(run.path / "tables/conditions.csv")
    assert {"format_accuracy", "length_accuracy", "both_accuracy"} <= set(cond.columns) and len(cond) == 8
    assert "Format and length at once" in (run.path / "summary.md").read_text()
    _resumes(run_composition, COMPOSITION, run, model=tiny)


def test_transfer_between_equal_widths_on_tiny(tmp_path, tiny, tiny_base):
    run = run_transfer(TRANSFER, tmp_path / "run", source=tiny, target=tiny_base, show_progress=False)
    _common_checks(run, ["conditions_loose", "per_instruction_loose", "layer_search_choices"])
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
    # the source's vectors really steered the target during the layer search
    gens = _lines(run.path / "generations.jsonl")
    assert any(g["arm"] == "source" and g["steering"] for g in gens if g["phase"] == "validation")
    cond = pd.read_csv(run.path / "tables/conditions_loose.csv")
    assert set(cond["arm"]) == {"none", "own", "source"} and len(cond) == 6
    assert "Gemma-2-2B" in (run.path / "summary.md").read_text()
    _resumes(run_transfer, TRANSFER, run, source=tiny, target=tiny_base)


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
        ["max_new_tokens=12", "weights=0,5", "layer=none", "baseline=opposite"],
        model="tiny-instruct",
        limit=None,
    )
    assert (cfg.max_new_tokens, cfg.weights, cfg.layer, cfg.baseline, cfg.limit) == (12, (0, 5), None, "opposite", 2)
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
                "n_validation=1",
                "--set",
                "n_pairs=2",
                "--set",
                "arms=include,exclude_subtract",
            ],
            "Include / exclude",
        ),
        ("composition", ["--limit", "2", "--set", "max_new_tokens=24", "--set", "n_validation=1"], "Format and length"),
        (
            "transfer",
            ["--limit", "1", "--fit-map", "--set", "max_new_tokens=12", "--set", "n_validation=1"],
            "Transfer",
        ),
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
