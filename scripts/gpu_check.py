"""The GPU check (run by scripts/gpu_check.sh): device correctness and a generation benchmark on
one GPU, with no network and no model weights (the tiny models, and a randomly initialised model
of SmolLM2-135M's architecture and size built from its config.json).

    python scripts/gpu_check.py --out DIR            # on a GPU machine
    python scripts/gpu_check.py --cpu --out DIR      # a dry run here: every step, on the CPU, small

Checks: greedy tokens on the device (fp32) equal the CPU's for one mixed per-row batch (add,
adjust, ablate x all, prompt, generated, explicit indices); caches match within tolerance;
bf16 and fp16 run (steering by 0 changes nothing); the device_map path gives the tokens of the
whole model; generation at batch 32 and 128 against transformers' own generate on the same GPU;
issue 14's layer x weight sweep as one batch against a loop of calls (fp32, tokens compared).
Writes DIR/gpu_check.json and DIR/gpu_check.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _datasets_or_stub() -> None:
    """TransformerLens imports `datasets` (and through it pyarrow) at import time but the
    workbench never calls it. Where the machine's pyarrow does not fit the carried datasets,
    stand in three names for it, and say so, rather than fail every check."""
    try:
        import datasets  # noqa: F401
    except Exception as err:  # ImportError, or pyarrow's own errors
        import types

        print(f"note: datasets does not import here ({type(err).__name__}: {err}); using a stub", flush=True)
        for name, attrs in (
            ("datasets", {}),
            ("datasets.arrow_dataset", {"Dataset": type("Dataset", (), {})}),
            ("datasets.iterable_dataset", {"IterableDataset": type("IterableDataset", (), {})}),
            ("datasets.load", {"load_dataset": None}),
        ):
            sys.modules[name] = types.ModuleType(name)
            sys.modules[name].__dict__.update(attrs)
        sys.modules["datasets"].load_dataset = None


_datasets_or_stub()
import workbench as wb
from workbench import models, weights
from workbench.prompts import encode
from workbench.twin import twin

PROMPTS = ["What is the capital of France?", "Tell me a story about a cat.", "Hi", "How do I bake bread at home?"]
GROUPS = [
    "model.embed_tokens",
    "model.rotary_emb",
    "model.layers.0",
    "model.layers.1",
    "model.layers.2",
    "model.layers.3",
    "model.norm",
    "lm_head",
]


def mixed_rows(vec, n_layers: int = 4) -> list[list[wb.Steering]]:
    """add / adjust / ablate x all / prompt / generated / explicit indices, and one unsteered row
    (the batch of tests/test_devices.py)."""
    rows = []
    for m, mode in enumerate(["add", "adjust", "ablate"]):
        for p, pos in enumerate(["all", "prompt", "generated", (-1, 2)]):
            rows.append([wb.Steering(vec, (m + p) % n_layers, mode, 8.0 if mode == "add" else 1.0, pos)])
    return rows + [[]]


def prompts(n: int) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS)) for i in range(n)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# the checks: each returns a dict with "ok" and what it measured
def check_tokens_and_caches(device: str) -> dict:
    cpu = wb.load_model("tiny-instruct")
    dev = wb.load_model("tiny-instruct", device=device)
    pairs = wb.instruction_pairs(PROMPTS * 2, "change_case:english_lowercase", seed=0)
    vec = wb.derive(wb.cache_pairs(cpu, pairs))
    rows, texts = mixed_rows(vec), prompts(13)
    out = dict(device=wb.model_info(dev).device)
    for path, unbridged in (("twin", None), ("bridge", False)):
        a = wb.generate_table(cpu, texts, rows, max_new_tokens=16, unbridged=unbridged)
        b = wb.generate_table(dev, texts, rows, max_new_tokens=16, unbridged=unbridged)
        same = [x == y for x, y in zip(a["token_ids"], b["token_ids"])]
        out[f"tokens_equal_{path}"] = f"{sum(same)}/{len(same)}"
    acts_cpu, acts_dev = wb.cache_pairs(cpu, pairs), wb.cache_pairs(dev, pairs)
    scale = acts_cpu.with_instruction.abs().max()
    err = float((acts_cpu.with_instruction - acts_dev.with_instruction).abs().max() / scale)
    out.update(cache_max_rel_error=err, cache_on=str(acts_dev.with_instruction.device))
    out["ok"] = (out["tokens_equal_twin"] == out["tokens_equal_bridge"] == "13/13") and err < 1e-4
    return out


def check_half(device: str) -> dict:
    cpu = wb.load_model("tiny-instruct")
    pairs = wb.instruction_pairs(PROMPTS * 2, "change_case:english_lowercase", seed=0)
    vec = wb.derive(wb.cache_pairs(cpu, pairs))
    out, ok = {}, True
    for dtype in ("bfloat16", "float16"):
        m = wb.load_model("tiny-instruct", device=device, dtype=dtype)
        table = wb.generate_table(m, prompts(13), mixed_rows(vec), max_new_tokens=12)
        zero = [[wb.Steering(vec, layer, "add", 0.0)] for layer in range(4)]
        plain = wb.generate_table(m, PROMPTS, max_new_tokens=12)
        same = list(wb.generate_table(m, PROMPTS, zero, max_new_tokens=12)["token_ids"]) == list(plain["token_ids"])
        acts = wb.cache_pairs(m, pairs)
        finite = bool(torch.isfinite(acts.with_instruction).all())
        derived = wb.derive(acts).vectors.dtype == torch.float32
        out[dtype] = dict(
            rows=len(table),
            zero_weight_changes_nothing=same,
            cache_finite=finite,
            derived_fp32=derived,
            model_dtype=wb.model_info(m).dtype,
        )
        ok &= same and finite and derived and len(table) == 13
    out["ok"] = ok
    return out


def check_device_map(device: str) -> dict:
    whole = wb.load_model("tiny-instruct", device=device)
    pairs = wb.instruction_pairs(PROMPTS * 2, "change_case:english_lowercase", seed=0)
    vec = wb.derive(wb.cache_pairs(whole, pairs))
    n = torch.cuda.device_count() if device.startswith("cuda") else 1
    target = (lambda i: i % n) if device.startswith("cuda") else (lambda i: "cpu")
    device_map = {name: target(i * n // len(GROUPS)) for i, name in enumerate(GROUPS)}
    device_map["lm_head"] = device_map["model.embed_tokens"]  # tied to the embedding
    split = wb.load_model("tiny-instruct", device_map=device_map)
    a = wb.generate_table(whole, prompts(13), mixed_rows(vec), max_new_tokens=16)
    b = wb.generate_table(split, prompts(13), mixed_rows(vec), max_new_tokens=16)
    c = wb.generate_table(split, prompts(13), mixed_rows(vec), max_new_tokens=16, unbridged=False)
    acts_a, acts_b = wb.cache_pairs(whole, pairs), wb.cache_pairs(split, pairs)
    err = float((acts_a.with_instruction - acts_b.with_instruction).abs().max())
    same_twin = list(a["token_ids"]) == list(b["token_ids"])
    same_bridge = list(a["token_ids"]) == list(c["token_ids"])
    return dict(
        ok=same_twin and same_bridge and err < 1e-5,
        devices=models.placement(split),
        twin_used=twin(split) is not None,
        tokens_equal_twin=same_twin,
        tokens_equal_bridge=same_bridge,
        cache_max_abs_error=err,
    )


def smollm_shaped(device: str, dtype: torch.dtype, assets: Path):
    """A random-weight model of SmolLM2-135M-Instruct's architecture and size, bridged, with the
    real tokenizer and chat template (the config and tokenizer travel; the weights do not)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(assets)
    torch.manual_seed(0)
    with torch.device(device):
        hf = AutoModelForCausalLM.from_config(config, dtype=dtype)
    hf.eval()
    return models.bridge(
        hf,
        weights.cached_tokenizer(assets),
        name="smollm2-135m-random",
        kind="instruct",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        weight_hash="random-seed-0",
        source=f"random init of {assets / 'config.json'}",
    )


def bench_generation(device: str, assets: Path, batches: list[int], new_tokens: int, dtype: torch.dtype) -> dict:
    """Tokens per second of wb.generate_table (unsteered and steered per row, on the twin; and
    on the bridge at the smallest batch) against transformers' generate on the twin's plain
    model, the same GPU, the same prompts, greedy."""
    model = smollm_shaped(device, dtype, assets)
    queries = wb.base_queries()
    vec_pairs = wb.instruction_pairs(queries[:16], "change_case:english_lowercase", seed=0)
    vec = wb.derive(wb.cache_pairs(model, vec_pairs, layers=[10, 15]))
    tw = twin(model)
    fmt = wb.default_format(model)
    results = []
    for batch in batches:
        texts = [queries[i % len(queries)] for i in range(batch)]
        specs = [
            [wb.Steering(vec, 10, "adjust")] if i % 2 else [wb.Steering(vec, 15, "add", 4.0)] for i in range(batch)
        ]
        cases = [
            (
                "workbench, unsteered",
                lambda: wb.generate_table(model, texts, max_new_tokens=new_tokens, batch_size=batch),
            ),
            (
                "workbench, steered per row",
                lambda: wb.generate_table(model, texts, specs, max_new_tokens=new_tokens, batch_size=batch),
            ),
        ]
        if batch == min(batches):
            cases.append(
                (
                    "workbench, bridged path",
                    lambda: wb.generate_table(
                        model, texts, specs, max_new_tokens=new_tokens, batch_size=batch, unbridged=False
                    ),
                )
            )
        ids = encode(model.tokenizer, fmt.apply_all(model.tokenizer, texts), fmt)
        width = max(map(len, ids))
        pad = model.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in ids], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids], device=device)

        def hf_generate():
            with torch.no_grad():
                out = tw.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    max_new_tokens=new_tokens,
                    do_sample=False,
                    pad_token_id=pad,
                )
            return out[:, width:]

        cases.append(("transformers generate (plain model)", hf_generate))
        for name, fn in cases:
            fn()  # warm-up: kernels, the stack check, the twin
            sync(device)
            start = time.perf_counter()
            got = fn()
            sync(device)
            seconds = time.perf_counter() - start
            tokens = int(got["n_tokens"].sum()) if hasattr(got, "columns") else int(got.numel())
            results.append(
                dict(
                    batch=batch,
                    case=name,
                    seconds=round(seconds, 3),
                    tokens=tokens,
                    tokens_per_s=round(tokens / seconds, 1),
                )
            )
            print(f"  batch {batch:4d}  {name:38s} {seconds:7.2f} s  {tokens / seconds:9.0f} tok/s", flush=True)
    return dict(
        ok=True,
        dtype=str(dtype).removeprefix("torch."),
        new_tokens=new_tokens,
        model="SmolLM2-135M-Instruct architecture, random weights",
        rows=results,
    )


def bench_sweep(device: str, assets: Path, new_tokens: int, dtype: torch.dtype, n_prompts: int = 4) -> dict:
    """Issue 14's sweep on the device: 4 layers x 8 `add` weights x `n_prompts` prompts, every
    position steered, as one batch against a loop of one call per configuration; same tokens."""
    model = smollm_shaped(device, dtype, assets)
    queries = wb.base_queries()[:n_prompts]
    vec = wb.derive(wb.cache_pairs(model, wb.instruction_pairs(queries * 4, "change_case:english_lowercase", seed=0)))
    configs = [wb.Steering(vec, layer, "add", w) for layer in (6, 12, 18, 24) for w in (0, 1, 2, 3, 4, 5, 6, 8)]
    texts = [q for _ in configs for q in queries]
    rows = [[c] for c in configs for _ in queries]

    def one_batch():
        return wb.generate_table(model, texts, rows, max_new_tokens=new_tokens, batch_size=len(texts))

    def loop():
        tables = [wb.generate_table(model, queries, [c], max_new_tokens=new_tokens) for c in configs]
        return [t for table in tables for t in table["token_ids"]]

    timings, got = {}, {}
    one_batch(), loop()  # warm-up: kernels, the twin, the stack check
    for name, fn in (("one_batch", one_batch), ("loop", loop), ("one_batch_again", one_batch)):
        sync(device)
        start = time.perf_counter()
        got[name] = fn()
        sync(device)
        timings[name] = round(time.perf_counter() - start, 3)
    batched = [list(t) for t in got["one_batch"]["token_ids"]]
    same = sum(a == list(b) for a, b in zip(batched, got["loop"]))
    speedup = timings["loop"] / min(timings["one_batch"], timings["one_batch_again"])
    print(f"  sweep {len(texts)} rows: one batch {timings['one_batch']} s, loop {timings['loop']} s", flush=True)
    return dict(
        ok=same == len(texts),
        rows=len(texts),
        tokens_equal=f"{same}/{len(texts)}",
        timings=timings,
        speedup_one_batch_vs_loop=round(speedup, 2),
        dtype=str(dtype).removeprefix("torch."),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="dry run on the CPU, small benchmark")
    ap.add_argument("--out", type=Path, default=Path("gpu_check_out"))
    ap.add_argument(
        "--assets",
        type=Path,
        default=ROOT / ".gpu_check" / "smollm2",
        help="SmolLM2's config.json and tokenizer files (scripts/gpu_check.sh --prepare)",
    )
    ap.add_argument("--batches", default=None, help="benchmark batch sizes (default 32,128; --cpu: 2,4)")
    ap.add_argument("--new-tokens", type=int, default=None, help="tokens per response (default 64; --cpu: 4)")
    args = ap.parse_args()
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: pass --cpu for a dry run", file=sys.stderr)
        return 2
    batches = [int(b) for b in (args.batches or ("2,4" if args.cpu else "32,128")).split(",")]
    new_tokens = args.new_tokens or (4 if args.cpu else 64)
    args.out.mkdir(parents=True, exist_ok=True)
    report = dict(
        device=torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
        dry_run=args.cpu,
        python=platform.python_version(),
        versions=models.library_versions(),
        cuda=torch.version.cuda,
        checks={},
    )
    print(f"gpu_check on {report['device']}: torch {torch.__version__}, cuda {torch.version.cuda}", flush=True)
    steps = [
        ("tokens_and_caches_fp32", lambda: check_tokens_and_caches(device)),
        ("bf16_and_fp16", lambda: check_half(device)),
        ("device_map", lambda: check_device_map(device)),
        (
            "benchmark",
            lambda: bench_generation(
                device, args.assets, batches, new_tokens, torch.bfloat16 if not args.cpu else torch.float32
            ),
        ),
        ("sweep", lambda: bench_sweep(device, args.assets, new_tokens, torch.float32, n_prompts=1 if args.cpu else 4)),
    ]
    for name, step in steps:
        start = time.perf_counter()
        print(f"[{name}]", flush=True)
        try:
            result = step()
        except Exception as err:  # record and go on: one failing check must not hide the others
            result = dict(ok=False, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        result["seconds"] = round(time.perf_counter() - start, 1)
        report["checks"][name] = result
        print(
            f"  -> {'ok' if result['ok'] else 'FAILED'} ({result['seconds']} s) "
            f"{ {k: v for k, v in result.items() if k not in ('rows', 'traceback')} }",
            flush=True,
        )
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "gpu_check.md").write_text(markdown(report))
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}")
    return 0 if all(c["ok"] for c in report["checks"].values()) else 1


def markdown(report: dict) -> str:
    lines = [
        f"# GPU check on {report['device']}" + (" (CPU dry run)" if report["dry_run"] else ""),
        "",
        (
            f"torch {report['versions'].get('torch')}, CUDA {report['cuda']}, transformers "
            f"{report['versions'].get('transformers')}, transformer-lens "
            f"{report['versions'].get('transformer-lens')}, Python {report['python']}"
        ),
        "",
        "| check | ok | details |",
        "| --- | --- | --- |",
    ]
    for name, c in report["checks"].items():
        details = {k: v for k, v in c.items() if k not in ("ok", "rows", "traceback")}
        lines.append(f"| {name} | {'yes' if c['ok'] else 'NO'} | {json.dumps(details, default=str)} |")
    bench = report["checks"].get("benchmark", {})
    if bench.get("rows"):
        lines += [
            "",
            (
                f"Generation, {bench['model']}, {bench['dtype']}, {bench['new_tokens']} new "
                f"tokens, greedy (tokens per second, one timed run after a warm-up):"
            ),
            "",
            "| batch | case | seconds | tokens | tokens/s |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['batch']} | {r['case']} | {r['seconds']} | {r['tokens']} | {r['tokens_per_s']} |"
            for r in bench["rows"]
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
