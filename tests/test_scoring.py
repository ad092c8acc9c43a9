"""IFEval scoring: known verdicts per instruction, loose vs strict, offline Punkt."""

from __future__ import annotations

import pickle
import socket

import nltk
import pytest

from workbench import _punkt
from workbench.data import IFEvalRow


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No network, no nltk.download, no pickles, and no nltk_data but the one we build."""

    def refuse(*args, **kwargs):
        raise AssertionError("scoring must not download, connect or unpickle")

    monkeypatch.setattr(nltk, "download", refuse)
    monkeypatch.setattr(nltk.downloader, "download", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(nltk.data, "restricted_pickle_load", refuse)
    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.delenv("NLTK_DATA", raising=False)
    _clear_tokenizer_caches()
    root = _punkt.ensure_punkt_tab(tmp_path / "nltk_data")
    assert nltk.data.path == [str(root)]
    yield
    _clear_tokenizer_caches()  # later tests must not reuse a tokenizer found in tmp_path


def _clear_tokenizer_caches():
    from if_verifiable.ifeval import instructions_util

    nltk.tokenize._get_punkt_tokenizer.cache_clear()
    instructions_util._get_sentence_tokenizer.cache_clear()
    nltk.data._resource_cache.clear()


def _score(iid, kwargs, response):
    from workbench.scoring import score_ifeval

    df = score_ifeval([IFEvalRow("k", "prompt", (iid,), (kwargs,))], [response])
    assert len(df) == 1
    return bool(df.strict[0]), bool(df.loose[0])


FOX = "the quick brown fox jumps over the lazy dog and then runs into the dark forest."
# (instruction id, kwargs, a response that follows it, a response that does not)
CASES = [
    ("change_case:english_lowercase", {}, FOX, FOX.capitalize()),
    ("change_case:english_capital", {}, FOX.upper(), FOX),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "at least"},
        "We visit the BIG APPLE often.",
        "We visit the big apple often.",
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "less than"},
        "We visit the BIG apple often.",
        "We visit the BIG APPLE often.",
    ),
    ("detectable_format:json_format", {}, '```json\n{"a": 1, "b": [2, 3]}\n```', "The answer is {a: 1}."),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "Section", "num_sections": 2},
        "Section 1\nFirst part.\nSection 2\nSecond part.",
        "Section 1\nOnly one part.",
    ),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* one\n* two\n* three", "* one\n* two"),
    (
        "detectable_format:number_highlighted_sections",
        {"num_highlights": 2},
        "This has *one part* and *another part*.",
        "This has *one part* only.",
    ),
    ("detectable_format:title", {}, "<<Ode to Joy>>\nRoses are red.", "Ode to Joy\nRoses are red."),
    ("detectable_format:constrained_response", {}, "My answer is yes.", "Yes, I think so."),
    ("punctuation:no_comma", {}, "There is no comma in this text.", "Here, a comma appears."),
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        "That is all. Any other questions?",
        "Any other questions? That is all.",
    ),
    ("startend:quotation", {}, '"Hello world."', "Hello world."),
    (
        "language:response_language",
        {"language": "fr"},
        "Le renard brun rapide saute par-dessus le chien paresseux et court dans la forêt.",
        FOX,
    ),
    (
        "keywords:existence",
        {"keywords": ["banana", "river"]},
        "A banana floated down the river.",
        "A banana floated down the stream.",
    ),
    # \bbanana\b: "bananas" is not the forbidden word
    ("keywords:forbidden_words", {"forbidden_words": ["banana"]}, "I like bananas and apples.", "I like a banana."),
    # Punkt knows "Mr." is no sentence end, so the first response has 2 sentences
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "less than"},
        "I met Mr. Smith today. He was nice.",
        "One thing. Two things. Three things.",
    ),
]


@pytest.mark.parametrize("iid,kwargs,good,bad", CASES, ids=[c[0] + str(i) for i, c in enumerate(CASES)])
def test_known_verdicts(iid, kwargs, good, bad):
    assert _score(iid, kwargs, good) == (True, True)
    assert _score(iid, kwargs, bad) == (False, False)


def test_paper_instruction_ids_are_all_covered():
    ids = {c[0] for c in CASES}
    from workbench.data import known_instruction_ids

    assert ids <= known_instruction_ids()
    assert len(ids) == 16


@pytest.mark.parametrize(
    "iid,response",
    [
        ("change_case:english_lowercase", "Sure, here it is:\n" + FOX),  # first line dropped
        ("punctuation:no_comma", "Sure, here it is:\nthere is no comma here."),
        ("startend:quotation", '**"Hello world."**'),  # asterisks removed
        ("detectable_format:json_format", 'Here is the JSON:\n{"a": 1}'),
    ],
)
def test_strict_fails_but_loose_passes(iid, response):
    assert _score(iid, {}, response) == (False, True)


def test_empty_response_fails_both_and_keeps_its_lines():
    from workbench.scoring import score_ifeval

    row = IFEvalRow("k", "p", ("punctuation:no_comma", "startend:quotation"), ({}, {}))
    df = score_ifeval([row], ["  \n"])
    assert list(df.instruction_id) == list(row.instruction_id_list)
    assert not df.strict.any() and not df.loose.any()


def test_none_kwargs_are_dropped_before_build_description():
    # IFEval data stores all kwargs keys for every instruction, unused ones as None;
    # TitleChecker.build_description takes none, so a None passed on would raise.
    none_kwargs = {"num_sentences": None, "relation": None, "keywords": None}
    assert _score("detectable_format:title", none_kwargs, "<<T>>") == (True, True)
    kw = {"num_sentences": 2, "relation": "at least", "keywords": None}
    assert _score("length_constraints:number_sentences", kw, "One. Two.") == (True, True)


def test_table_shape_and_prompt_level():
    from workbench.scoring import prompt_level, score_ifeval

    rows = [
        IFEvalRow("a", "p", ("punctuation:no_comma", "startend:quotation"), ({}, {})),
        IFEvalRow("b", "p", ("detectable_format:title",), ()),  # empty kwargs = no arguments
    ]
    df = score_ifeval(rows, ['Sure, here:\n"no comma"', "<<t>> hi"])
    assert list(df.columns) == ["prompt_index", "key", "instruction_id", "strict", "loose"]
    assert list(df.prompt_index) == [0, 0, 1] and list(df.key) == ["a", "a", "b"]
    assert df.strict.dtype == bool and df.loose.dtype == bool
    pl = prompt_level(df)
    assert list(pl.key) == ["a", "b"] and list(pl.n_instructions) == [2, 1]
    assert list(pl.strict) == [False, True] and list(pl.loose) == [True, True]


def test_errors_name_the_problem():
    from workbench.scoring import score_ifeval

    row = IFEvalRow("k", "p", ("punctuation:no_comma",), ({},))
    with pytest.raises(ValueError, match=r"1 rows but 2 responses"):
        score_ifeval([row], ["a", "b"])
    bad = IFEvalRow("k", "p", ("punctuation:no_commas",), ({},))
    with pytest.raises(ValueError, match=r"'punctuation:no_commas'.*INSTRUCTION_DICT"):
        score_ifeval([bad], ["a"])
    # IFEval would draw the missing threshold at random: a random verdict
    unset = IFEvalRow("k7", "p", ("length_constraints:number_sentences",), ({"relation": "less than"},))
    with pytest.raises(ValueError, match=r"key 'k7'.*missing argument.*num_sentences"):
        score_ifeval([unset], ["One. Two."])


def test_count_sentences_is_nltk_english_punkt():
    from workbench.scoring import count_sentences

    text = "Hello Mr. Smith. How are you? Fine."
    assert nltk.sent_tokenize(text) == ["Hello Mr. Smith.", "How are you?", "Fine."]
    assert count_sentences(text) == 3
    assert count_sentences("Dr. Who met Johann S. Bach at 5 p.m. on Jan. 3. It rained.") == 2
    assert nltk.word_tokenize("I'm FINE-ish, Mr. Smith.") == ["I", "'m", "FINE-ish", ",", "Mr.", "Smith", "."]


def test_punkt_tab_files_round_trip(tmp_path):
    from nltk.tokenize.punkt import load_punkt_params
    from punkt.data import load_bundled

    _punkt.ensure_punkt_tab(tmp_path)  # NLTK only opens files under nltk.data.path roots
    lang_dir = tmp_path / "tokenizers" / "punkt_tab" / "english"
    assert sorted(p.name for p in lang_dir.iterdir()) == sorted(_punkt._FILES)
    assert [p.name for p in lang_dir.parent.iterdir()] == ["english"]  # no staging leftovers
    got = load_punkt_params(nltk.data.FileSystemPathPointer(str(lang_dir)))
    want = load_bundled("english")
    assert got.abbrev_types == want.abbrev_types and got.sent_starters == want.sent_starters
    assert got.collocations == want.collocations and dict(got.ortho_context) == want.ortho_context
    before = (lang_dir / "ortho_context.tab").stat().st_mtime_ns
    assert _punkt.write_punkt_tab(tmp_path) == lang_dir  # existing model is reused
    assert (lang_dir / "ortho_context.tab").stat().st_mtime_ns == before


def test_punkt_tables_follow_workbench_cache(tmp_path, monkeypatch):
    """Every file the workbench writes goes under $WORKBENCH_CACHE when it is set, the NLTK
    tables included (they used to go to $HOME/.cache regardless)."""
    from workbench import _punkt

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "wbcache"))
    root = _punkt.default_root()
    assert root.is_relative_to(tmp_path / "wbcache")
    _punkt.write_punkt_tab(root)
    assert (root / "tokenizers" / "punkt_tab" / "english").is_dir()
