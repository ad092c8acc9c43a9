"""Fluency: repetition measures with hand-computed values, the degeneration rule on cases read
from real outputs and at each threshold, perplexity against an oracle."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from workbench.fluency import (
    compression_ratio,
    degeneration_reason,
    distinct_n,
    fluency_table,
    is_degenerate,
    longest_run,
    perplexity,
    repeated_unit,
    units,
    without_json,
    words,
)

PARAGRAPH = (
    "Photosynthesis is the process by which green plants, algae and some bacteria "
    "convert light energy into chemical energy. During this process, carbon dioxide "
    "and water are combined, using energy from sunlight, to produce glucose and oxygen. "
    "The reaction takes place mainly in the chloroplasts of leaf cells."
)
BULLETS = (
    "* Eat more vegetables every day.\n* Drink at least eight glasses of water.\n"
    "* Sleep for seven to nine hours.\n* Exercise for thirty minutes.\n"
    "* Avoid sugary drinks and snacks.\n* Take short breaks from screens."
)


TITLE_AND_PARAGRAPH = "<<The Benefits of Exercise>>\n\n" + PARAGRAPH
JSON_RECORDS = """[
  {
    "type": "fruit",
    "name": "apple",
    "color": "red"
  },
  {
    "type": "fruit",
    "name": "banana",
    "color": "yellow"
  },
  {
    "type": "fruit",
    "name": "grape",
    "color": "purple"
  }
]"""
PROS_CONS = (
    "Tea\nPros:\n- Less caffeine.\nCons:\n- Weaker taste.\n\n"
    "Coffee\nPros:\n- Strong taste.\nCons:\n- Bitter.\n\n"
    "Juice\nPros:\n- Vitamins.\nCons:\n- Sugar."
)
SECTIONS = (
    "SECTION 1\nCities are large and busy.\nSECTION 2\nVillages are small and quiet.\nSECTION 3\nBoth have a market."
)
TABLE = "| Name | Age | City |\n| --- | --- | --- |\n| Ann | 31 | Oslo |\n| Bob | 45 | Rome |"
CODE = "function sign(x) {\n  if (x > 0) {\n    return 1;\n  }\n  if (x < 0) {\n    return -1;\n  }\n  return 0;\n}"
BIG = 10**9  # a threshold no text reaches: switches a criterion off


def test_distinct_n_by_hand():
    assert words("I am. I am.") == ["i", "am", ".", "i", "am", "."]
    assert distinct_n("I am. I am.", 1) == 3 / 6
    assert distinct_n("I am. I am.", 2) == 3 / 5  # (i,am) (am,.) (.,i) (i,am) (am,.)
    assert distinct_n("a b c d", 3) == 1.0
    assert math.isnan(distinct_n("one", 2)) and math.isnan(distinct_n("", 1))


def test_compression_ratio():
    assert compression_ratio("ab" * 500) < 0.05
    assert 0.5 < compression_ratio(PARAGRAPH) < 0.8
    assert math.isnan(compression_ratio(""))


def test_units_and_repeats_by_hand():
    assert units("<<Menu>>\n\n1. Soup. Bread.\n2. Soup 2\n***\n}") == ["menu", "soup", "bread", "soup 0"]
    assert repeated_unit("") == ("", 0)
    assert repeated_unit("A.\nB.\nA.") == ("a", 1)  # short: only a streak in a row counts
    assert repeated_unit("**Menu**\n- menu:\n<<MENU>>") == ("menu", 3)
    assert repeated_unit("I like green tea. Rain. I like green tea. Sun.") == ("i like green tea", 2)
    assert repeated_unit("SECTION 1\nSECTION 2\nSECTION 3") == ("section 0", 3)
    assert longest_run("") == ("", 0) and longest_run("abc") == ("", 0)
    assert longest_run("<<<<<<<<") == ("<", 8)
    assert longest_run("so tiny tiny tiny tiny") == (" tiny", 20)
    assert longest_run("ab ab") == ("", 0)  # two copies are no run
    assert longest_run("x" + " " * 40 + "y") == ("", 0)  # whitespace does not count
    assert without_json('Here: {"a": 1, "b": [1, 2]} Done.') == "Here:  Done."
    assert without_json('{"a": {"a": {"a": {') == '{"a": {"a": {"a": {'  # cut short: kept


@pytest.mark.parametrize(
    "text",
    [
        "the " * 60,
        "I am. " * 40,
        "I love dogs because they are loyal and friendly. " * 8,
        "",
        "  \n",
        "<" * 192,  # known error: one character, one "word"
        "<<My Title>>\n\n<<My Title>>\n\n<<My Title>>",  # the title written three times
        "<<A Guide to Sailing Small Boats Safely>>\n\n" * 3 + PARAGRAPH,
        "\U0001f389" * 30,  # one emoji over and over
        "MALLOC\n\n" * 10,
        "SECTION 1\nSECTION 2\nSECTION 3\nSECTION 4",  # empty sections, counting
        "He was born in Boston. He loved science. He was born in Boston. He wrote books. He was born in Boston.",
    ],
)
def test_repetition_and_empty_are_degenerate(text):
    assert is_degenerate(text)


@pytest.mark.parametrize(
    "text",
    [
        PARAGRAPH,
        BULLETS,
        "My answer is yes.",
        "yes yes",
        "Yes.",
        "No, no, no.",
        '{"name": "Alice", "hobbies": ["reading", "chess"], "age": 30}',
        TITLE_AND_PARAGRAPH,  # known error: title then prose
        "<<Title>>\n\nThis is a paragraph.",
        JSON_RECORDS,
        PROS_CONS,
        SECTIONS,
        TABLE,
        CODE,
        "That is very very very good.",
        "I'm not sure. I'm not sure.",
        "* This is point 1\n* This is point 2",
    ],
)
def test_normal_text_is_not_degenerate(text):
    assert not is_degenerate(text)
    assert degeneration_reason(text) == ""


def test_each_criterion_at_its_threshold():
    assert degeneration_reason("") == "empty" and degeneration_reason(" \n\t") == "empty"
    # run: 20 characters, at least three copies, a string of at most 32 characters
    assert degeneration_reason("<" * 19) == "" and degeneration_reason("<" * 20) == "run"
    assert degeneration_reason("<" * 29, min_run=30) == ""
    assert degeneration_reason("abcdefghij" * 2) == ""  # 20 characters, two copies
    assert degeneration_reason("abcdefg" * 3) == "run"  # 21 characters, three copies
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFG"
    assert degeneration_reason(letters[:32] * 3) == "run" and degeneration_reason(letters * 3) == ""
    # repeated_line: three times; in a row for a short line, anywhere for 4+ words
    title = "<<A Guide to Sailing Small Boats Safely>>\n\n"  # longer than a run's string
    assert degeneration_reason(title * 2) == "" and degeneration_reason(title * 3) == "repeated_line"
    assert degeneration_reason(title * 3, max_repeats=4, min_distinct_2=0.0) == ""
    assert degeneration_reason("I like green tea. Rain. I like green tea. Sun. I like green tea.") == "repeated_line"
    assert degeneration_reason("I like tea. Rain. I like tea. Sun. I like tea.") == ""  # 3 words
    assert degeneration_reason("SECTION 1\nSECTION 2") == ""
    assert degeneration_reason("SECTION 1\nSECTION 2\nSECTION 3") == "repeated_line"
    # distinct_2: 20 words and below 0.5 (the other criteria switched off)
    off = dict(min_run=BIG, max_repeats=BIG)
    yes_no = " ".join(["yes", "no"] * 10)
    assert len(words(yes_no)) == 20 and distinct_n(yes_no, 2) == 2 / 19
    assert degeneration_reason(yes_no, **off) == "distinct_2"
    assert degeneration_reason(yes_no.rsplit(" ", 1)[0], **off) == ""  # 19 words
    assert degeneration_reason(yes_no, min_distinct_2=2 / 19, **off) == ""
    # compression: 200 bytes and below 0.25
    ab = "ab" * 100
    ratio = compression_ratio(ab)
    assert ratio < 0.25 and degeneration_reason(ab, **off) == "compression"
    assert degeneration_reason(ab[:199], **off) == ""  # 199 bytes
    assert degeneration_reason(ab, min_compression=ratio, **off) == ""
    # perplexity: below 2.5; NaN or None gives no verdict
    assert degeneration_reason(PARAGRAPH, ppl=2.49) == "perplexity"
    assert degeneration_reason(PARAGRAPH, ppl=2.5) == "" and degeneration_reason(PARAGRAPH, ppl=math.nan) == ""
    assert is_degenerate(PARAGRAPH, ppl=2.0) and not is_degenerate(PARAGRAPH, ppl=2.0, min_ppl=1.5)


def test_criteria_order_and_old_rules_alone():
    loop = "I love dogs because they are loyal and friendly. " * 8
    assert degeneration_reason(loop, ppl=1.0) == "repeated_line"  # the first that holds
    assert degeneration_reason(loop, max_repeats=BIG) == "distinct_2"
    assert degeneration_reason(loop, max_repeats=BIG, min_distinct_2=0.0) == "compression"
    assert not is_degenerate(loop, max_repeats=BIG, min_distinct_2=0.0, min_compression=0.0)
    # Repetition that was once too short to judge is now a run (was `not is_degenerate`).
    assert degeneration_reason("the " * 10) == "run"


def test_json_is_judged_without_its_structure():
    assert distinct_n(JSON_RECORDS, 2) < 0.5  # keys and punctuation repeat in every record
    assert degeneration_reason(JSON_RECORDS) == ""
    nesting = '```json\n{\n  "type": "text",\n  "data": {\n' + "".join(
        '    "type": "text",\n    "data": {\n' for _ in range(8)
    )  # cut: no closing
    assert degeneration_reason(nesting) == "distinct_2"


def test_fluency_table():
    df = fluency_table([PARAGRAPH, "the " * 60, "<" * 50], ppl=[12.0, 1.1, 9.0])
    assert list(df.columns) == [
        "ppl",
        "distinct_1",
        "distinct_2",
        "compression_ratio",
        "degenerate",
        "degenerate_reason",
    ]
    assert list(df.degenerate) == [False, True, True] and list(df.ppl) == [12.0, 1.1, 9.0]
    assert list(df.degenerate_reason) == ["", "run", "run"]
    assert list(fluency_table(["x" * 25], min_run=30).degenerate) == [False]  # thresholds pass on
    assert fluency_table(["x"]).ppl.isna().all()
    with pytest.raises(ValueError, match="2 texts but 1"):
        fluency_table(["a", "b"], ppl=[1.0])


@pytest.fixture(scope="module")
def llama2():
    """A random 2-layer Llama with a byte-level tokenizer built in memory."""
    byte_vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    raw = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<bos>", eos_token="<eos>")
    assert tok.bos_token_id == 256 and len(tok) == 258
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=300,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
    )
    hf = LlamaForCausalLM(cfg).eval()
    return SimpleNamespace(original_model=hf, tokenizer=tok)


def _oracle(llama2, text, prompt=None, add_bos=True):
    """exp(mean NLL) of one text, unpadded, via the model's own loss."""
    tok = llama2.tokenizer
    ctx = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    ctx = ([tok.bos_token_id] if add_bos else []) + ctx
    resp = tok(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + resp])
    labels = ids.clone()
    labels[0, : len(ctx)] = -100
    with torch.no_grad():
        return math.exp(llama2.original_model(input_ids=ids, labels=labels).loss.item())


def test_perplexity_matches_unpadded_oracle(llama2):
    texts = ["Hello there.", "A much longer response, so the batch needs padding.", "", "x"]
    got = perplexity(llama2, texts, batch_size=3)
    for text, p in zip(texts, got):
        if text:
            assert p == pytest.approx(_oracle(llama2, text), rel=1e-4)
    assert math.isnan(got[2])


def test_perplexity_with_prompts_scores_only_the_response(llama2):
    prompts = ["<bos>Q: Say hi.\nA:", "<bos>Q: Count to three, please.\nA:"]
    texts = [" Hi!", " One, two, three."]
    got = perplexity(llama2, texts, prompts, batch_size=2)
    for prompt, text, p in zip(prompts, texts, got):
        # the prompt already starts with BOS (as chat templates write it): not doubled
        assert p == pytest.approx(_oracle(llama2, text, prompt[len("<bos>") :]), rel=1e-4)
    # a different prompt changes the perplexity of the same response
    assert perplexity(llama2, [texts[0]], ["<bos>Something else:"])[0] != pytest.approx(got[0])
    no_bos = perplexity(llama2, texts, ["Q: Say hi.\nA:", "Q: Count to three, please.\nA:"])
    assert no_bos[0] == pytest.approx(_oracle(llama2, texts[0], "Q: Say hi.\nA:", add_bos=False), rel=1e-4)
    with pytest.raises(ValueError, match="2 texts but 1 prompts"):
        perplexity(llama2, texts, prompts[:1])


def test_perplexity_restores_training_mode(llama2):
    llama2.original_model.train()
    try:
        perplexity(llama2, ["abc"])
        assert llama2.original_model.training
    finally:
        llama2.original_model.eval()
