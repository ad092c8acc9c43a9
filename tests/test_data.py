"""Data: IFEval-style JSONL from any path, the 163 format prompts, query splits, pairs, formats."""

from __future__ import annotations

import inspect
import json
import random

import pytest
from if_verifiable.ifeval import INSTRUCTION_DICT

import workbench as wb
from workbench.data import data_path, join_without_instruction
from workbench.pairs import PHRASINGS
from workbench.prompts import QA_FORMAT, PromptFormat, encode


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _write(path, lines):
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n")
    return path


def _raw(name):
    return [json.loads(l) for l in data_path(name).read_text().splitlines() if l.strip()]


# ---------------------------------------------------------------- load_ifeval


def test_packaged_input_file_matches_its_raw_json():
    rows = wb.load_ifeval(data_path("ifeval_input_data.jsonl"))
    raw = _raw("ifeval_input_data.jsonl")
    assert len(rows) == len(raw) == 541
    assert len({r.key for r in rows}) == len(rows)
    for row, record in zip(rows, raw):
        assert row.key == str(record["key"]) and row.prompt == record["prompt"]
        assert row.instruction_id_list == tuple(record["instruction_id_list"])
        assert len(row.kwargs) == len(row.instruction_id_list)
        assert row.prompt_without_instruction is None


def test_packaged_without_instruction_file_reads_model_output():
    rows = wb.load_ifeval(data_path("ifeval_wo_instructions.jsonl"))
    raw = {str(r["key"]): r for r in _raw("ifeval_wo_instructions.jsonl")}
    assert len(rows) == len(raw)
    for row in rows:
        assert row.prompt == raw[row.key]["original_prompt"]
        assert row.prompt_without_instruction == raw[row.key]["model_output"]
        assert row.extra["rewrite_prompt"] == raw[row.key]["prompt"]


def test_packaged_validation_file_keys_default_to_line_numbers():
    rows = wb.load_ifeval(data_path("inclusion_validation.jsonl"))
    assert [r.key for r in rows[:3]] == ["1", "2", "3"]
    assert {"question", "likely_words", "unlikely_words"} <= set(rows[0].extra)
    assert rows[0].prompt_without_instruction


def test_user_file_keys_extras_and_kwargs(tmp_path):
    path = _write(
        tmp_path / "mine.jsonl",
        [
            {
                "prompt": "Write a poem. Use lowercase.",
                "instruction_id_list": ["change_case:english_lowercase"],
                "kwargs": [{"unused": None}],
                "source": "me",
                "tags": ["a", "b"],
            },
            "",  # blank lines are skipped but still counted
            {
                "prompt": "Answer in German.",
                "key": "de-1",
                "instruction_id_list": ["language:response_language"],
                "kwargs": [{"language": "de"}],
                "prompt_without_instruction": "Answer.",
            },
            {"prompt": "No instruction here."},
        ],
    )
    rows = wb.load_ifeval(path)
    assert [r.key for r in rows] == ["1", "de-1", "4"]
    assert rows[0].extra == {"source": "me", "tags": ["a", "b"]}
    assert rows[0].kwargs == ({},)  # null verifier arguments are dropped, as IFEval does
    assert rows[1].kwargs == ({"language": "de"},) and rows[1].prompt_without_instruction == "Answer."
    assert rows[2].instruction_id_list == () and rows[2].kwargs == ()
    assert wb.load_ifeval(str(path)) == rows  # str paths too


@pytest.mark.parametrize(
    "bad_line, pattern",
    [
        ('{"prompt": "a",', r"line 2: not valid JSON"),
        ('{"key": "x", "instruction_id_list": []}', r"line 2: missing field 'prompt'"),
        ('{"prompt": 3}', r"line 2: missing field 'prompt'"),
        ('["a list"]', r"line 2: expected a JSON object"),
        (
            '{"prompt": "b", "instruction_id_list": ["no_such:instruction"]}',
            r"line 2: unknown instruction id 'no_such:instruction'",
        ),
        (
            '{"prompt": "b", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]}',
            r"line 2: .*equal length",
        ),
        (
            '{"prompt": "b", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [5]}',
            r"line 2: kwargs\[0\] is 5, not an object. Fix: one object",
        ),
        ('{"prompt": "b", "instruction_id_list": [7], "kwargs": [{}]}', r"line 2: 'instruction_id_list' holds 7.*Fix"),
        ('{"prompt": "b", "prompt_without_instruction": 7}', r"line 2: field 'prompt_without_instruction' is 7.*Fix"),
        ('{"prompt": "b", "key": [1]}', r"line 2: field 'key' is \[1\]. Fix: a string or an integer"),
        ('{"prompt": "b", "key": true}', r"line 2: field 'key' is True"),
        (
            '{"prompt": "b", "instruction_id_list": ["detectable_format:number_bullet_lists"], "kwargs": [{"num_bullets": "3"}]}',
            (
                r"line 2: kwargs\[0\] \(detectable_format:number_bullet_lists\): 'num_bullets' is '3', the verifier needs an "
                r"integer. Fix: .*\"num_bullets\": 3"
            ),
        ),
        (
            '{"prompt": "b", "instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": true, "relation": "less than"}]}',
            r"line 2: .*'num_words' is True, the verifier needs an integer",
        ),
        (
            '{"prompt": "b", "instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": 3.5}]}',
            r"line 2: .*'num_words' is 3.5",
        ),
        (
            '{"prompt": "b", "instruction_id_list": ["language:response_language"], "kwargs": [{"language": 1}]}',
            r"line 2: .*'language' is 1, the verifier needs a string. Fix",
        ),
        (
            '{"prompt": "b", "instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": "cat"}]}',
            r"line 2: .*'keywords' is 'cat', the verifier needs a list of words. Fix",
        ),
        (
            '{"prompt": "b", "instruction_id_list": ["keywords:forbidden_words"], "kwargs": [{"forbidden_words": ["a", 1]}]}',
            r"line 2: .*'forbidden_words' is \['a', 1\]",
        ),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, bad_line, pattern):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine"}\n' + bad_line + "\n")
    with pytest.raises(ValueError, match=pattern) as err:
        wb.load_ifeval(path)
    assert str(path) in str(err.value)


def test_non_utf8_bytes_name_file_line_and_fix(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "fine"}\n\n{"prompt": "caf\xe9"}\n')
    pattern = r"line 3: not UTF-8 text .*column 16.*Fix: save the file as UTF-8"
    with pytest.raises(ValueError, match=pattern) as err:
        wb.load_ifeval(path)
    assert str(path) in str(err.value)


def test_kwarg_types_cover_every_verifier_argument():
    """Every keyword argument of every IFEval verifier has a checked type, so a library update
    that adds one shows up here."""
    from workbench.data import INT_KWARGS, STR_KWARGS, WORD_LIST_KWARGS

    names = {
        p
        for cls in INSTRUCTION_DICT.values()
        for p in inspect.signature(cls.build_description).parameters
        if p != "self"
    }
    assert names == INT_KWARGS | STR_KWARGS | WORD_LIST_KWARGS
    assert not (INT_KWARGS & STR_KWARGS or INT_KWARGS & WORD_LIST_KWARGS or STR_KWARGS & WORD_LIST_KWARGS)


def _keyword_file(path, *, without=True):
    """The shape of the paper's keyword test files: one line per word, each with the IFEval key of
    its prompt, plus old_prompt and instruction_id_list_old."""

    def line(key, word, iid="keywords:existence", arg="keywords"):
        base = f"Write about topic {key}."
        record = {
            "key": key,
            "prompt": f'{base} Include the word "{word}".',
            "instruction_id_list": [iid],
            "kwargs": [{arg: [word]}],
            "instruction_id_list_for_eval": [iid],
            "old_prompt": f"{base} Include the keywords all of them.",
            "instruction_id_list_old": ["keywords:existence", "length_constraints:number_words"],
        }
        if without:
            record["prompt_without_instruction"] = base
        return record

    return _write(
        path,
        [
            line(1531, "atlantis"),
            line(1531, "constable"),
            line(2602, "zelda"),
            line(1147, "field", "keywords:forbidden_words", "forbidden_words"),
            line(1147, "thanks", "keywords:forbidden_words", "forbidden_words"),
        ],
    )


def test_repeated_keys_get_distinct_row_ids(tmp_path):
    rows = wb.load_ifeval(_keyword_file(tmp_path / "kw.jsonl"))
    assert [r.key for r in rows] == ["1531", "1531", "2602", "1147", "1147"]
    assert [r.row_id for r in rows] == ["1531#1", "1531#2", "2602", "1147#1", "1147#2"]
    assert rows[0].extra["old_prompt"] and rows[0].extra["instruction_id_list_old"]
    assert rows[1].kwargs == ({"keywords": ["constable"]},)
    # rows made by hand take their key as row id; the constructor is unchanged
    assert wb.IFEvalRow("k", "p").row_id == "k" and wb.IFEvalRow("k", "p", row_id="k#2").row_id == "k#2"


def test_repeated_keys_join_one_request_per_key(tmp_path):
    path = _keyword_file(tmp_path / "kw.jsonl", without=False)
    without = _write(
        tmp_path / "wo.jsonl",
        [{"key": k, "prompt": "x", "prompt_without_instruction": f"request {k}"} for k in (1531, 2602, 1147)],
    )
    rows = wb.format_test_rows(path, without, instructions=["keywords:existence", "keywords:forbidden_words"])
    assert [(r.row_id, r.prompt_without_instruction) for r in rows] == [
        ("1531#1", "request 1531"),
        ("1531#2", "request 1531"),
        ("2602", "request 2602"),
        ("1147#1", "request 1147"),
        ("1147#2", "request 1147"),
    ]
    # a without-file of the same shape is matched line by line
    same = join_without_instruction(rows, wb.load_ifeval(_keyword_file(tmp_path / "same.jsonl")))
    assert [r.prompt_without_instruction for r in same] == ["Write about topic 1531."] * 2 + [
        "Write about topic 2602."
    ] + ["Write about topic 1147."] * 2


def test_a_key_spelt_like_a_numbered_repeat_is_refused(tmp_path):
    path = _write(
        tmp_path / "x.jsonl", [{"key": 7, "prompt": "a"}, {"key": 7, "prompt": "b"}, {"key": "7#2", "prompt": "c"}]
    )
    with pytest.raises(ValueError, match=r"row id '7#2' is both a key and a numbered repeat.*Fix: rename"):
        wb.load_ifeval(path)


def test_unknown_ids_pass_when_not_checked(tmp_path):
    path = _write(tmp_path / "x.jsonl", [{"prompt": "b", "instruction_id_list": ["mine:custom"]}])
    assert wb.load_ifeval(path, check_ids=False)[0].instruction_id_list == ("mine:custom",)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no IFEval file"):
        wb.load_ifeval(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="no rows"):
        wb.load_ifeval(tmp_path / "empty.jsonl")


# ---------------------------------------------------------------- the 163 format prompts


def test_format_test_rows_are_the_papers_163():
    rows = wb.format_test_rows()
    # an independent count over the raw file
    raw = _raw("ifeval_input_data.jsonl")
    expected = [
        str(r["key"])
        for r in raw
        if len(r["instruction_id_list"]) == 1 and r["instruction_id_list"][0] in wb.FORMAT_INSTRUCTIONS
    ]
    assert len(rows) == 163 and [r.key for r in rows] == expected
    without = {str(r["key"]): r["model_output"] for r in _raw("ifeval_wo_instructions.jsonl")}
    for row in rows:
        assert row.prompt_without_instruction and row.prompt_without_instruction == without[row.key]
        assert row.instruction_id_list[0] in wb.FORMAT_INSTRUCTIONS


def test_format_test_rows_from_a_user_file(tmp_path):
    path = _write(
        tmp_path / "test.jsonl",
        [
            {
                "key": "a",
                "prompt": "Hi. No commas.",
                "instruction_id_list": ["punctuation:no_comma"],
                "kwargs": [{}],
                "prompt_without_instruction": "Hi.",
            },
            {
                "key": "b",
                "prompt": "Hi. In lowercase.",
                "instruction_id_list": ["change_case:english_lowercase"],
                "kwargs": [{}],
                "prompt_without_instruction": "Hi there.",
            },
            {
                "key": "c",
                "prompt": "Two at once.",
                "instruction_id_list": ["punctuation:no_comma", "startend:quotation"],
                "kwargs": [{}, {}],
                "prompt_without_instruction": "Two.",
            },
            {
                "key": "d",
                "prompt": "Not a format one.",
                "instruction_id_list": ["keywords:existence"],
                "kwargs": [{"keywords": ["x"]}],
                "prompt_without_instruction": "Not.",
            },
        ],
    )
    rows = wb.format_test_rows(path)
    assert [(r.key, r.prompt_without_instruction) for r in rows] == [("a", "Hi."), ("b", "Hi there.")]
    only = wb.format_test_rows(path, instructions=["punctuation:no_comma"])
    assert [r.key for r in only] == ["a"]


def test_format_test_rows_joins_a_user_without_file(tmp_path):
    rows = _write(
        tmp_path / "rows.jsonl",
        [{"key": 7, "prompt": "Hi. No commas.", "instruction_id_list": ["punctuation:no_comma"]}],
    )
    without = _write(tmp_path / "wo.jsonl", [{"key": 7, "prompt": "x", "prompt_without_instruction": "Hi."}])
    got = wb.format_test_rows(rows, without)
    assert [(r.key, r.prompt_without_instruction) for r in got] == [("7", "Hi.")]
    other = _write(tmp_path / "wo2.jsonl", [{"key": 8, "prompt": "x", "prompt_without_instruction": "Hi."}])
    with pytest.raises(ValueError, match="key '7' has no match"):
        wb.format_test_rows(rows, other)


# ---------------------------------------------------------------- query splits


def test_split_excludes_every_evaluation_query():
    queries, evaluation = wb.base_queries(), wb.format_test_rows()
    split = wb.split_queries(queries, exclude=evaluation, seed=0)
    banned = {_norm(r.prompt_without_instruction) for r in evaluation}
    kept = split.train + split.validation
    assert not {_norm(q) for q in kept} & banned
    assert not set(split.train) & set(split.validation)
    # nothing else is lost: kept + excluded is every distinct query
    assert len(kept) + split.excluded == len(set(queries))
    assert split.excluded == sum(_norm(q) in banned for q in set(queries)) > 0
    assert len(split.validation) == round(0.1 * len(kept))


def test_split_is_seeded():
    queries = wb.base_queries()
    a, b = wb.split_queries(queries, seed=0), wb.split_queries(queries, seed=0)
    c = wb.split_queries(queries, seed=1)
    assert a == b
    assert a.train != c.train and sorted(a.train + a.validation) == sorted(c.train + c.validation)
    assert len(wb.split_queries(queries, validation=5).validation) == 5


def test_split_normalises_whitespace_and_case():
    split = wb.split_queries(["Hello  World", "kept"], exclude=["hello world"], validation=0)
    assert split.train == ("kept",) and split.excluded == 1
    with pytest.raises(ValueError, match="no base query is left"):
        wb.split_queries(["a"], exclude=["A"])


# ---------------------------------------------------------------- pairs


def test_make_pairs_from_rows():
    rows = wb.format_test_rows()[:3]
    pairs = wb.make_pairs(rows)
    for row, pair in zip(rows, pairs):
        assert (pair.key, pair.with_instruction, pair.without_instruction) == (
            row.key,
            row.prompt,
            row.prompt_without_instruction,
        )
        assert pair.instruction_id == row.instruction_id_list[0] and pair.kwargs == row.kwargs[0]
    with pytest.raises(ValueError, match="prompt_without_instruction"):
        wb.make_pairs(wb.load_ifeval(data_path("ifeval_input_data.jsonl"))[:1])
    with pytest.raises(ValueError, match="no rows"):
        wb.make_pairs([])


def test_instruction_pairs_append_a_sentence(short_queries):
    pairs = wb.instruction_pairs(short_queries, "language:response_language", seed=3)
    assert len(pairs) == len(short_queries)
    for query, pair in zip(short_queries, pairs):
        assert pair.without_instruction == query
        assert pair.with_instruction.startswith(query + " ")
        assert len(pair.with_instruction) > len(query) + 10
        assert pair.instruction_id == "language:response_language"
        assert set(pair.kwargs) == {"language"}
    assert len({p.key for p in pairs}) == len(pairs)


def test_instruction_pairs_are_seeded_and_leave_global_random_alone(short_queries):
    random.seed(123)
    before = random.random()
    random.seed(123)
    a = wb.instruction_pairs(short_queries, "detectable_format:number_bullet_lists", seed=0)
    assert random.random() == before  # the registry's use of `random` is undone
    b = wb.instruction_pairs(short_queries, "detectable_format:number_bullet_lists", seed=0)
    c = wb.instruction_pairs(short_queries, "detectable_format:number_bullet_lists", seed=1)
    assert a == b and [p.kwargs for p in a] == [p.kwargs for p in b]
    assert [p.with_instruction for p in a] != [p.with_instruction for p in c]


def test_instruction_pairs_fixed_kwargs_and_sampling(short_queries):
    pairs = wb.instruction_pairs(short_queries, "language:response_language", kwargs={"language": "de"})
    assert all(p.kwargs == {"language": "de"} and "German" in p.with_instruction for p in pairs)
    some = wb.instruction_pairs(short_queries, "punctuation:no_comma", n=3, seed=5)
    assert len(some) == 3 and {p.without_instruction for p in some} <= set(short_queries)
    assert some == wb.instruction_pairs(short_queries, "punctuation:no_comma", n=3, seed=5)


def test_instruction_pairs_bad_input(short_queries):
    with pytest.raises(ValueError, match="unknown instruction id 'change_case:sarcasm'"):
        wb.instruction_pairs(short_queries, "change_case:sarcasm")
    with pytest.raises(ValueError, match="no base queries"):
        wb.instruction_pairs([], "punctuation:no_comma")


@pytest.mark.parametrize("instruction_id", wb.FORMAT_INSTRUCTIONS)
def test_every_format_instruction_gives_verifiable_pairs(instruction_id, short_queries):
    """The sentence appended is what the registry writes for the recorded kwargs (or one of our
    phrasings of a kwarg-free instruction), and the kwargs hold every argument the verifier needs."""
    pairs = wb.instruction_pairs(short_queries, instruction_id, seed=0)
    checker = INSTRUCTION_DICT[instruction_id](instruction_id)
    needed = set(checker.get_instruction_args_keys())
    for pair in pairs:
        assert needed <= set(pair.kwargs), f"{instruction_id}: kwargs {pair.kwargs} lack {needed}"
        sentence = pair.with_instruction[len(pair.without_instruction) + 1 :]
        rebuilt = checker.build_description(**pair.kwargs)
        assert sentence == rebuilt or sentence in PHRASINGS.get(instruction_id, []), sentence
        if pair.kwargs:
            assert sentence == rebuilt  # our phrasings never stand in for a sentence with arguments


# ---------------------------------------------------------------- prompt formats


def test_chat_format_ends_with_the_assistant_header(tiny):
    fmt = wb.default_format(tiny)
    assert fmt == PromptFormat("chat")
    text = fmt.apply(tiny.tokenizer, "Hello?")
    assert text == "<|im_start|>user\nHello?<|im_end|>\n<|im_start|>assistant\n"
    system = PromptFormat("chat", system="Be terse.").apply(tiny.tokenizer, "Hello?")
    assert system.startswith("<|im_start|>system\nBe terse.<|im_end|>\n") and system.endswith(text)


@pytest.mark.slow
def test_smollm_chat_format(smollm):
    fmt = wb.default_format(smollm)
    assert fmt.kind == "chat"
    text = fmt.apply(smollm.tokenizer, "Name a color.")
    assert text.endswith("<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n")
    ids = encode(smollm.tokenizer, [text], fmt)[0]
    start = smollm.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids[0] == start and ids[1] != start  # the template's own header, not doubled
    assert smollm.tokenizer.decode(ids) == text


@pytest.mark.slow
def test_gemma_base_format_adds_bos_once(gemma):
    fmt = wb.default_format(gemma)
    assert fmt == QA_FORMAT and fmt.add_bos
    text = fmt.apply(gemma.tokenizer, "Name a color.")
    assert text == "Q: Name a color.\nA:"
    ids = encode(gemma.tokenizer, [text], fmt)[0]
    bos = gemma.tokenizer.bos_token_id
    assert ids[0] == bos and bos not in ids[1:]
    assert ids[1:] == gemma.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_base_and_custom_formats(tiny_base):
    assert wb.default_format(tiny_base) == QA_FORMAT
    custom = PromptFormat("template", 'Task: {prompt}\nReturn JSON like {"a": 1}.\nAnswer:')
    assert custom.apply(tiny_base.tokenizer, "sum 2+2") == 'Task: sum 2+2\nReturn JSON like {"a": 1}.\nAnswer:'
    raw = PromptFormat("raw")
    assert raw.apply(tiny_base.tokenizer, "as is") == "as is"
    ids = encode(tiny_base.tokenizer, ["ab"], raw)[0]
    assert len(ids) == 2 and tiny_base.tokenizer.bos_token_id not in ids
    ids = encode(tiny_base.tokenizer, ["ab"], QA_FORMAT)[0]
    assert ids[0] == tiny_base.tokenizer.bos_token_id and len(ids) == 3
    assert custom.to_dict()["template"] == custom.template


def test_invalid_formats(tiny_base):
    with pytest.raises(ValueError, match="unknown prompt format kind 'jinja'"):
        PromptFormat("jinja")
    with pytest.raises(ValueError, match=r"\{prompt\}"):
        PromptFormat("template", "Q: {query}\nA:")
    with pytest.raises(ValueError, match="no chat template"):
        PromptFormat("chat").apply(tiny_base.tokenizer, "hi")
