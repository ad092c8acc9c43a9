"""Benchmark 4: steered generation against its ceilings, all in one process (issue 14).

Every candidate generates for the same prompts in one left-padded batch, greedy, with EOS
switched off, so each runs exactly `new_tokens` decode steps for every row and tokens/s compares
like with like. The steering is `adjust` at layer 12 (the lowercase vector of bench_generate),
w = 1 on every position:

  hf_unbridged       transformers `generate` on a plain AutoModelForCausalLM copy (sdpa) loaded
                     from the workbench's safetensors cache: the ceiling, no steering
  hf_unbridged_hook  the same plus one plain torch forward hook on decoder layer 12 doing the
                     `adjust` (x + (z - x.u) u): the mechanism of the peer libraries, hand-written
  peer               steering-vectors: `SteeringVector({12: u}).apply(copy, operator=adjust)`
                     around the same `generate` (its public `operator` argument turns its additive
                     patch into the `adjust`; min_token_index=0: every position)
  wb_twin            `wb.generate_table(model, prompts, steering=[spec])`, the default path
                     (decodes on the unbridged twin)
  wb_bridge          the same with `unbridged=False`: the bridged path, i.e. before the twin

One process per run: the model and the copy are loaded once, every candidate is warmed up,
then the candidates run in turn, the order rotating each repetition (common.interleave). The
batch sizes run one after another in the same process.

    .venv/bin/python -m benchmarks.bench_baselines time [--quick]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from benchmarks import common
from benchmarks.bench_generate import LAYER, MODEL, hf_generate, load_raw, no_eos, padded, vector

PEER = "steering-vectors"


def sizes(quick: bool) -> dict:
    if quick:
        return dict(n_train=8, batches=(4, 8), new_tokens=8, reps=3)
    return dict(n_train=32, batches=(32, 64), new_tokens=64, reps=3)


def adjust_delta(u: torch.Tensor, z: float):
    """The `adjust` change at w = 1, (z - x.u) u, for activations x of shape (..., d_model)."""

    def delta(x: torch.Tensor) -> torch.Tensor:
        return (z - x @ u)[..., None] * u

    return delta


def plain_hook(hf, layer: int, u: torch.Tensor, z: float):
    """A forward hook on decoder layer `layer` returning x + (z - x.u) u; returns its handle."""
    delta = adjust_delta(u, z)

    def hook(module, args, output):
        if isinstance(output, tuple):  # older decoder layers return (hidden_states, ...)
            return (output[0] + delta(output[0]), *output[1:])
        return output + delta(output)

    return hf.model.layers[layer].register_forward_hook(hook)


def peer_apply(hf, layer: int, u: torch.Tensor, z: float):
    """steering-vectors' context manager doing the same `adjust`, or the reason it cannot."""
    try:
        from steering_vectors import SteeringVector
    except Exception as e:  # not installed: pip install -e '.[bench]'
        return None, f"{PEER} not importable ({type(e).__name__}: {e})"

    # its hook adds operator(x, multiplier * vector) to the layer output, in place
    def operator(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        v = v.reshape(-1)
        return (z - x @ v)[..., None] * v

    sv = SteeringVector({layer: u.clone()}, layer_type="decoder_block")
    return (lambda: sv.apply(hf, operator=operator, multiplier=1.0, min_token_index=0)), None


def peer_version() -> str | None:
    import importlib.metadata as md

    try:
        return md.version(PEER)
    except md.PackageNotFoundError:
        return None


def run_time(quick: bool) -> dict:
    import workbench as wb

    cfg = sizes(quick)
    T = cfg["new_tokens"]
    model = wb.load_model(MODEL)
    vec = vector(model, cfg["n_train"])
    spec = wb.Steering(vec, layer=LAYER, mode="adjust", weight=1.0, positions="all")
    u, z = vec.direction(LAYER).float(), float(vec.z_bar(LAYER))
    hf = load_raw("sdpa")
    pad = model.tokenizer.pad_token_id or 0
    peer, peer_error = peer_apply(hf, LAYER, u, z)
    if peer is not None:  # a failure on this stack is reported, and the plain hook stands in
        try:
            with peer():
                hf_generate(hf, *padded(model, wb.base_queries()[:2]), 2, pad)
        except Exception as e:
            peer, peer_error = None, f"{PEER} failed on this stack ({type(e).__name__}: {e})"
    out = dict(
        spec=spec.describe(),
        new_tokens=T,
        reps=cfg["reps"],
        peer=PEER,
        peer_version=peer_version(),
        peer_error=peer_error,
        attn_unbridged=hf.config._attn_implementation,
        attn_bridge=model.original_model.config._attn_implementation,
        torch_threads=torch.get_num_threads(),
        batches={},
    )
    for B in cfg["batches"]:
        prompts = wb.base_queries()[:B]
        input_ids, mask = padded(model, prompts)
        tokens: dict[str, list[list[int]]] = {}

        def wb_run(key, **kw):
            def go():
                t = wb.generate_table(
                    model, prompts, steering=[spec], max_new_tokens=T, batch_size=B, show_progress=False, **kw
                )
                tokens[key] = [list(r) for r in t["token_ids"]]

            return go

        def hf_run(key, ctx=None):
            def go():
                if ctx is None:
                    tokens[key] = hf_generate(hf, input_ids, mask, T, pad).tolist()
                    return
                with ctx():
                    tokens[key] = hf_generate(hf, input_ids, mask, T, pad).tolist()

            return go

        def hooked():
            h = plain_hook(hf, LAYER, u, z)
            try:
                tokens["hf_unbridged_hook"] = hf_generate(hf, input_ids, mask, T, pad).tolist()
            finally:
                h.remove()

        candidates = {
            "hf_unbridged": hf_run("hf_unbridged"),
            "hf_unbridged_hook": hooked,
            **({"peer": hf_run("peer", peer)} if peer is not None else {}),
            "wb_twin": wb_run("wb_twin"),
            "wb_bridge": wb_run("wb_bridge", unbridged=False),
        }
        common.log(
            f"[baselines] batch {B}: {len(prompts)} prompts, width {input_ids.shape[1]}, "
            f"{T} new tokens, candidates {list(candidates)}"
        )
        with no_eos(model):  # warm-up: 2 tokens on 2 prompts each way
            wb.generate_table(model, prompts[:2], steering=[spec], max_new_tokens=2, show_progress=False)
            wb.generate_table(
                model, prompts[:2], steering=[spec], max_new_tokens=2, show_progress=False, unbridged=False
            )
            hf_generate(hf, input_ids[:2], mask[:2], 2, pad)
            times = common.interleave(candidates, reps=cfg["reps"], warmup=0, log=common.log)
        n_tok = {k: sum(len(r) for r in v) for k, v in tokens.items()}
        assert all(n == B * T for n in n_tok.values()), n_tok  # fixed-length work everywhere
        same = lambda a, b: sum(x == y for x, y in zip(tokens[a], tokens[b]))
        res = dict(
            n_prompts=B,
            batch_size=B,
            prompt_width=int(input_ids.shape[1]),
            padding_share=float(1 - mask.float().mean()),
            tokens_per_run=B * T,
            seconds=times.summary(),
            tokens_per_s={k: B * T / common.median(v) for k, v in times.wall.items()},
            rows_identical_to_wb_twin={k: same(k, "wb_twin") for k in tokens if k not in ("wb_twin", "hf_unbridged")},
        )
        # throughput ratio a / b = time(b) / time(a), repetition by repetition
        for a, b in [
            ("wb_twin", "hf_unbridged"),
            ("wb_twin", "hf_unbridged_hook"),
            ("wb_twin", "peer"),
            ("wb_bridge", "hf_unbridged"),
            ("wb_bridge", "peer"),
            ("wb_twin", "wb_bridge"),
            ("peer", "hf_unbridged"),
            ("hf_unbridged_hook", "hf_unbridged"),
        ]:
            if a in candidates and b in candidates:
                res[f"throughput_ratio_{a}_vs_{b}"] = times.ratio(b, a)
        out["batches"][str(B)] = res
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["time"])
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    common.resume_or_start()
    common.emit(run_time(a.quick))


if __name__ == "__main__":
    main()
