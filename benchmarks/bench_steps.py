"""Cost of one KV-cached decode step by batch size: the bridged model vs plain transformers (sdpa).

Explains the sweep benchmark's ceiling: how much dearer a 32-row step is than a 4-row step.
Not part of benchmarks.run (diagnostic, ~1 min):

    .venv/bin/python -m benchmarks.bench_steps
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from benchmarks import common

BATCHES = (1, 4, 32)


@torch.no_grad()
def step_cost(hf, batch: int, steps: int = 8, context: int = 64) -> tuple[float, float]:
    """(wall, CPU) seconds per decode step after a `context`-token prefill."""
    from transformers import DynamicCache

    ids = torch.randint(0, 1000, (batch, context))
    cache = DynamicCache()
    hf(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    x = torch.randint(0, 1000, (batch, 1))
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        hf(input_ids=x, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def main() -> None:
    import workbench as wb
    from benchmarks.bench_generate import load_raw

    model = wb.load_model("smollm2-135m-instruct")
    models = {"bridge": model.original_model, "hf_raw_sdpa": load_raw("sdpa")}
    out = {k: {b: dict(wall=[], cpu=[]) for b in BATCHES} for k in models}
    for _ in range(2):  # two rounds, interleaved
        for b in BATCHES:
            for k, hf in models.items():
                w, c = step_cost(hf, b)
                out[k][b]["wall"].append(w)
                out[k][b]["cpu"].append(c)
                common.log(f"{k} batch {b}: {w:.3f} s wall, {c:.3f} s CPU per step")
    common.emit(
        {
            k: {str(b): {m: round(common.median(v), 4) for m, v in d.items()} for b, d in per.items()}
            for k, per in out.items()
        }
    )


if __name__ == "__main__":
    main()
