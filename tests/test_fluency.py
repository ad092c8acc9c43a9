"""Fluency: repetition measures with hand-computed values, perplexity against an oracle."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from workbench.fluency import (compression_ratio, distinct_n, fluency_table, is_degenerate,
                               perplexity, words)

PARAGRAPH = ("Photosynthesis is the process by which green plants, algae and some bacteria "
             "convert light energy into chemical energy. During this process, carbon dioxide "
             "and water are combined, using energy from sunlight, to produce glucose and oxygen. "
             "The reaction takes place mainly in the chloroplasts of leaf cells.")
BULLETS = ("* Eat more vegetables every day.\n* Drink at least eight glasses of water.\n"
           "* Sleep for seven to nine hours.\n* Exercise for thirty minutes.\n"
           "* Avoid sugary drinks and snacks.\n* Take short breaks from screens.")


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


@pytest.mark.parametrize("text", ["the " * 60, "I am. " * 40,
                                  "I love dogs because they are loyal and friendly. " * 8, "", "  \n"])
def test_repetition_and_empty_are_degenerate(text):
    assert is_degenerate(text)


@pytest.mark.parametrize("text", [PARAGRAPH, BULLETS, "My answer is yes.", "yes yes",
                                  '{"name": "Alice", "hobbies": ["reading", "chess"], "age": 30}'])
def test_normal_text_is_not_degenerate(text):
    assert not is_degenerate(text)


def test_each_rule_alone():
    assert is_degenerate(PARAGRAPH, ppl=2.0)  # the paper's perplexity rule
    assert not is_degenerate(PARAGRAPH, ppl=2.5) and not is_degenerate(PARAGRAPH, ppl=math.nan)
    loop = "I love dogs because they are loyal and friendly. " * 8
    assert not is_degenerate(loop, min_distinct_2=0.0, min_compression=0.0)
    assert is_degenerate(loop, min_distinct_2=0.0)  # compression alone
    assert is_degenerate(loop, min_compression=0.0)  # distinct-2 alone
    assert not is_degenerate("the " * 10)  # too short for the statistics, no ppl given


def test_fluency_table():
    df = fluency_table([PARAGRAPH, "the " * 60], ppl=[12.0, 1.1])
    assert list(df.columns) == ["ppl", "distinct_1", "distinct_2", "compression_ratio", "degenerate"]
    assert list(df.degenerate) == [False, True] and list(df.ppl) == [12.0, 1.1]
    assert fluency_table(["x"]).ppl.isna().all()
    with pytest.raises(ValueError, match="2 texts but 1"):
        fluency_table(["a", "b"], ppl=[1.0])


@pytest.fixture(scope="module")
def tiny():
    """A random 2-layer Llama with a byte-level tokenizer built in memory."""
    byte_vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    raw = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<bos>", eos_token="<eos>")
    assert tok.bos_token_id == 256 and len(tok) == 258
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64)
    hf = LlamaForCausalLM(cfg).eval()
    return SimpleNamespace(original_model=hf, tokenizer=tok)


def _oracle(tiny, text, prompt=None, add_bos=True):
    """exp(mean NLL) of one text, unpadded, via the model's own loss."""
    tok = tiny.tokenizer
    ctx = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    ctx = ([tok.bos_token_id] if add_bos else []) + ctx
    resp = tok(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + resp])
    labels = ids.clone()
    labels[0, :len(ctx)] = -100
    with torch.no_grad():
        return math.exp(tiny.original_model(input_ids=ids, labels=labels).loss.item())


def test_perplexity_matches_unpadded_oracle(tiny):
    texts = ["Hello there.", "A much longer response, so the batch needs padding.", "", "x"]
    got = perplexity(tiny, texts, batch_size=3)
    for text, p in zip(texts, got):
        if text:
            assert p == pytest.approx(_oracle(tiny, text), rel=1e-4)
    assert math.isnan(got[2])


def test_perplexity_with_prompts_scores_only_the_response(tiny):
    prompts = ["<bos>Q: Say hi.\nA:", "<bos>Q: Count to three, please.\nA:"]
    texts = [" Hi!", " One, two, three."]
    got = perplexity(tiny, texts, prompts, batch_size=2)
    for prompt, text, p in zip(prompts, texts, got):
        # the prompt already starts with BOS (as chat templates write it): not doubled
        assert p == pytest.approx(_oracle(tiny, text, prompt[len("<bos>"):]), rel=1e-4)
    # a different prompt changes the perplexity of the same response
    assert perplexity(tiny, [texts[0]], ["<bos>Something else:"])[0] != pytest.approx(got[0])
    no_bos = perplexity(tiny, texts, ["Q: Say hi.\nA:", "Q: Count to three, please.\nA:"])
    assert no_bos[0] == pytest.approx(_oracle(tiny, texts[0], "Q: Say hi.\nA:", add_bos=False), rel=1e-4)
    with pytest.raises(ValueError, match="2 texts but 1 prompts"):
        perplexity(tiny, texts, prompts[:1])


def test_perplexity_restores_training_mode(tiny):
    tiny.original_model.train()
    try:
        perplexity(tiny, ["abc"])
        assert tiny.original_model.training
    finally:
        tiny.original_model.eval()
