"""A tiny random-weight Llama and a byte-level tokenizer, built in memory for fast tests.

Same architecture family and hook names as SmolLM2 (4 layers, d_model 64); no files, no hub.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


def byte_tokenizer(chat: bool) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: one token per UTF-8 byte, plus four special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL + sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # transformers leaves its __init__ unannotated
        tokenizer_object=core,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>" if chat else "<|endoftext|>",
        pad_token="<pad>",
        unk_token=None,
    )
    # TransformerBridge re-reads a tokenizer from `name_or_path` unless it already adds BOS
    tokenizer.init_kwargs.update(name_or_path="tiny-byte-level", add_bos_token=True)
    if chat:
        tokenizer.chat_template = CHATML
    return tokenizer


def tiny_hf_model(
    kind: str = "instruct", seed: int = 0, d_model: int = 64, n_layers: int = 4
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_tokenizer(chat=kind == "instruct")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=4 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        attn_implementation="eager",  # type: ignore[call-arg]  # taken by PretrainedConfig, undeclared on LlamaConfig
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # a larger init than the default 0.02 so that greedy decoding is not a constant token
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    model.train(False)  # eval mode (nn.Module.eval, which transformers leaves unannotated)
    return model, tokenizer
