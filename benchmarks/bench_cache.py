"""Benchmark 1: caching throughput, wb.cache_pairs vs a raw transformers forward.

Both sides see the same batches: the 2 x n_pairs formatted prompts (with / without the
instruction) ordered longest first as cache_pairs orders them, cut into batches of 16, left
padded with the same pad id, the same attention mask and position ids from the mask. The raw
side is AutoModelForCausalLM from the workbench's safetensors cache (fp32), called with
output_hidden_states=True, keeping the last position of every layer (moved to the CPU like
cache_pairs does). It is measured with attn_implementation "eager" and "sdpa"; a third raw
variant calls the decoder stack alone (no lm_head), the strictest like-for-like baseline since
cache_pairs does not compute logits either.

    .venv/bin/python -m benchmarks.bench_cache time [--quick]
    .venv/bin/python -m benchmarks.bench_cache memory VARIANT [--quick]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from benchmarks import common

INSTRUCTION = "change_case:english_lowercase"
MODEL = "smollm2-135m-instruct"
BATCH = 16
VARIANTS = ("wb", "hf_eager", "hf_sdpa", "hf_eager_nohead")


def sizes(quick: bool) -> dict:
    return dict(n_pairs=4 if quick else 32, reps=3)


def make_pairs(n_pairs: int):
    import workbench as wb

    return wb.instruction_pairs(wb.base_queries()[:n_pairs], INSTRUCTION)


def hf_batches(tokenizer, pairs, batch_size: int = BATCH):
    """The batches cache_pairs builds, as tensors for a raw forward."""
    from workbench.prompts import PromptFormat, encode
    from workbench.runs import batched

    fmt = PromptFormat("chat")
    texts = fmt.apply_all(tokenizer, [p.with_instruction for p in pairs]) + fmt.apply_all(
        tokenizer, [p.without_instruction for p in pairs]
    )
    ids = encode(tokenizer, texts, fmt)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    pad = tokenizer.pad_token_id or 0
    out = []
    for index in batched(order, batch_size):
        rows = [ids[i] for i in index]
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        out.append((index, input_ids, mask, position_ids))
    return out, len(ids), sum(len(r) for r in ids)


def load_hf(attn: str):
    from transformers import AutoModelForCausalLM

    import workbench as wb

    directory = wb.weights.cache_dir(wb.weights.BUNDLED[MODEL])
    model = AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, attn_implementation=attn, local_files_only=True
    )
    return model.eval()


@torch.no_grad()
def hf_cache(model, batches, n_prompts: int, head: bool = True) -> torch.Tensor:
    """(n_prompts (those in `batches`), n_layers, d_model): each layer's output at the last position, on the CPU."""
    out: dict[int, torch.Tensor] = {}
    fwd = model if head else model.model
    for index, input_ids, mask, position_ids in batches:
        res = fwd(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
        )
        # hidden_states[0] is the embedding; [i + 1] is layer i's output (the last after the norm)
        last = torch.stack(res.hidden_states[1:], dim=1)[:, :, -1]  # left padded: -1 is last
        for i, row in zip(index, last):
            out[i] = row.to("cpu", copy=True)
    return torch.stack([out[i] for i in sorted(out)])


def wb_cache(model, pairs):
    import workbench as wb

    return wb.cache_pairs(model, pairs, layers=None, position="last", batch_size=BATCH, show_progress=False)


def run_time(quick: bool) -> dict:
    import workbench as wb

    cfg = sizes(quick)
    model = wb.load_model(MODEL)
    pairs = make_pairs(cfg["n_pairs"])
    batches, n_prompts, n_tokens = hf_batches(model.tokenizer, pairs)
    eager, sdpa = load_hf("eager"), load_hf("sdpa")
    common.log(
        f"cache: {n_prompts} prompts ({n_tokens} tokens) in {len(batches)} batches of "
        f"<= {BATCH}; bridge attn={model.original_model.config._attn_implementation}"
    )

    # correctness: the two routes read the same activations (all layers but the last, which
    # HF reports after the final norm)
    acts = wb_cache(model, pairs)
    ref = hf_cache(eager, batches, n_prompts)
    got = torch.cat([acts.with_instruction, acts.without_instruction])
    max_diff = float((got[:, :-1] - ref[:, :-1]).abs().max())

    candidates = {
        "wb": lambda: wb_cache(model, pairs),
        "hf_eager": lambda: hf_cache(eager, batches, n_prompts),
        "hf_sdpa": lambda: hf_cache(sdpa, batches, n_prompts),
        "hf_eager_nohead": lambda: hf_cache(eager, batches, n_prompts, head=False),
    }
    # warm-up: one small batch each (the first call of a model pays one-off costs)
    wb_cache(model, pairs[:2])
    for m in (eager, sdpa):
        hf_cache(m, batches[-1:], n_prompts)
    hf_cache(eager, batches[-1:], n_prompts, head=False)
    times = common.interleave(candidates, reps=cfg["reps"], warmup=0, log=common.log)
    res = dict(
        n_pairs=cfg["n_pairs"],
        n_prompts=n_prompts,
        n_tokens=n_tokens,
        batch_size=BATCH,
        n_layers=model.cfg.n_layers,
        max_abs_diff_vs_hf=max_diff,
        bridge_attn_implementation=model.original_model.config._attn_implementation,
        seconds=times.summary(),
        prompts_per_s={k: n_prompts / common.median(v) for k, v in times.wall.items()},
    )
    for base in ("hf_eager", "hf_sdpa", "hf_eager_nohead"):
        # throughput ratio wb / raw = time(raw) / time(wb), pair by pair
        res[f"throughput_ratio_wb_vs_{base}"] = times.ratio(base, "wb")
    return res


def run_memory(variant: str, quick: bool) -> dict:
    import workbench as wb

    cfg = sizes(quick)
    pairs = make_pairs(cfg["n_pairs"])
    if variant == "wb":
        model = wb.load_model(MODEL)
        fn = lambda: wb_cache(model, pairs)
    else:
        from transformers import AutoTokenizer

        attn = "sdpa" if variant == "hf_sdpa" else "eager"
        model = load_hf(attn)
        tok = AutoTokenizer.from_pretrained(wb.weights.cache_dir(wb.weights.BUNDLED[MODEL]))
        batches, n_prompts, _ = hf_batches(tok, pairs)
        head = variant != "hf_eager_nohead"
        fn = lambda: hf_cache(model, batches, n_prompts, head=head)
    return dict(variant=variant, **common.measure_memory(fn))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["time", "memory"])
    p.add_argument("variant", nargs="?", choices=VARIANTS)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    common.resume_or_start()
    common.emit(run_time(a.quick) if a.what == "time" else run_memory(a.variant, a.quick))


if __name__ == "__main__":
    main()
