"""Devices, dtypes and device maps: where the model is put is where it runs, and a model split by
a device_map (accelerate's hooks on every block, as a multi-GPU split has) gives the tokens and
caches of the unsplit model. Tests marked `gpu` run wherever CUDA is, and skip elsewhere."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import workbench as wb
from workbench import devices, models
from workbench.twin import twin

CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA")
PROMPTS = ["What is the capital of France?", "Tell me a story about a cat.", "Hi", "How do I bake bread at home?"]
# the tiny model in groups, each its own accelerate block
GROUPS = {
    "model.embed_tokens": "cpu",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "cpu",
    "model.layers.2": "cpu",
    "model.layers.3": "cpu",
    "model.norm": "cpu",
    "lm_head": "cpu",
}


def mixed_rows(vec, n_layers: int = 4) -> list[list[wb.Steering]]:
    """One per-row batch covering add / adjust / ablate x all / prompt / generated / explicit
    indices at varied layers, and one unsteered row."""
    rows, positions = [], ["all", "prompt", "generated", (-1, 2)]
    for m, mode in enumerate(["add", "adjust", "ablate"]):
        for p, pos in enumerate(positions):
            weight = {"add": 8.0, "adjust": 1.0, "ablate": 1.0}[mode]
            rows.append([wb.Steering(vec, (m + p) % n_layers, mode, weight, pos)])
    return rows + [[]]


def _prompts(n: int) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS)) for i in range(n)]


# dtypes and devices: names, refusals, the record
def test_dtype_names():
    assert devices.as_dtype(None) is torch.float32
    assert devices.as_dtype("bf16") is torch.bfloat16 and devices.as_dtype("torch.float16") is torch.float16
    assert devices.as_dtype(torch.bfloat16) is torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'int8'"):
        devices.as_dtype("int8")


@pytest.mark.skipif(CUDA, reason="checks the refusal where CUDA is absent")
def test_cuda_without_cuda_is_refused_before_loading():
    with pytest.raises(ValueError, match="CUDA is not available.*Fix: --device cpu"):
        wb.load_model("tiny-instruct", device="cuda")
    with pytest.raises(ValueError, match="device or device_map, not both"):
        wb.load_model("tiny-instruct", device="cpu", device_map="auto")


def test_the_run_record_states_device_and_dtype(tiny):
    info = wb.model_info(tiny)
    assert (info.device, info.dtype) == ("cpu", "float32")
    assert models.recipe(tiny) == dict(name="tiny-instruct", dtype="float32", seed=0)


@pytest.mark.skipif(CUDA, reason="checks the refusal where CUDA is absent")
def test_cli_refuses_a_device_or_dtype_before_any_work(tmp_path):
    from workbench.cli import app

    runner = CliRunner()
    for args, message in (
        (["--device", "cuda"], "CUDA is not available"),
        (["--dtype", "int8"], "unknown dtype 'int8'"),
        (["--device", "cpu", "--device-map", "auto"], "not both"),
    ):
        result = runner.invoke(
            app, ["reproduce", "length", "--model", "tiny-instruct", "--quick", "--out", str(tmp_path / "run"), *args]
        )
        assert result.exit_code == 2, result.output
        assert message in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_caches_derives_and_steers(tiny, tiny_pairs, tiny_vec, dtype):
    """In bf16 / fp16 the hooks compute in the activation's dtype, the cache is finite, and
    vectors derived from it (and the fp32 vector used on it) stay float32."""
    half = wb.load_model("tiny-instruct", dtype=dtype)
    assert wb.model_info(half).dtype == dtype and half.wb_info.weight_hash == tiny.wb_info.weight_hash
    acts = wb.cache_pairs(half, tiny_pairs)
    assert acts.with_instruction.dtype == devices.as_dtype(dtype)
    assert torch.isfinite(acts.with_instruction).all()
    vec = wb.derive(acts)
    assert vec.vectors.dtype == torch.float32
    table = wb.generate_table(half, _prompts(13), mixed_rows(tiny_vec), max_new_tokens=8)
    assert len(table) == 13 and set(table["finish_reason"]) <= {"eos", "length"}
    # steering by 0 changes nothing in any dtype: the terms were cast, not dropped
    zero = [[wb.Steering(tiny_vec, layer, "add", 0.0)] for layer in range(4)]
    plain = wb.generate_table(half, PROMPTS, max_new_tokens=8)
    assert list(wb.generate_table(half, PROMPTS, zero, max_new_tokens=8)["token_ids"]) == list(plain["token_ids"])
    assert tiny_vec.vectors.dtype == torch.float32 and tiny_vec.vectors.device.type == "cpu"


# device maps: the dispatch code of a multi-GPU split, exercised on the CPU
@pytest.fixture(scope="module")
def grouped():
    return wb.load_model("tiny-instruct", device_map=GROUPS)


def test_a_device_map_dispatches_with_accelerate_hooks(grouped):
    hooked = [n for n, m in grouped.original_model.named_modules() if hasattr(m, "_hf_hook")]
    assert "model.layers.3._original_component" in hooked or "model.layers.3" in hooked
    assert grouped.original_model.hf_device_map == GROUPS
    assert wb.model_info(grouped).device == "cpu"
    tw = twin(grouped)  # the twin shares the weights and gets the same hooks
    assert tw is not None and any(hasattr(m, "_hf_hook") for m in tw.model.layers)
    ours = {p.data_ptr() for p in grouped.original_model.parameters()}
    assert all(p.data_ptr() in ours for p in tw.parameters())


@pytest.mark.parametrize("unbridged", [True, False])
def test_a_grouped_model_gives_the_tokens_of_the_whole(tiny, tiny_vec, grouped, unbridged):
    prompts, rows = _prompts(13), mixed_rows(tiny_vec)
    want = wb.generate_table(tiny, prompts, rows, max_new_tokens=12, batch_size=5)
    got = wb.generate_table(grouped, prompts, rows, max_new_tokens=12, batch_size=5, unbridged=unbridged)
    assert list(got["token_ids"]) == list(want["token_ids"])


def test_a_grouped_model_gives_the_caches_of_the_whole(tiny, tiny_pairs, grouped, recorder):
    for position in ("last", "mean"):
        a = wb.cache_pairs(tiny, tiny_pairs, position=position, batch_size=3)
        b = wb.cache_pairs(grouped, tiny_pairs, position=position, batch_size=3)
        assert torch.equal(a.with_instruction, b.with_instruction)
        assert torch.equal(a.without_instruction, b.without_instruction)
    tokens = torch.tensor([[1, 5, 9, 20, 33, 7]])
    names = ["blocks.0.hook_resid_post", "blocks.3.hook_resid_pre"]
    la, ca = recorder(tiny, tokens, names)
    lb, cb = recorder(grouped, tokens, names)
    assert torch.equal(la, lb) and all(torch.equal(ca[n], cb[n]) for n in names)


def test_offloaded_layers_run_on_the_bridge_with_the_same_tokens(tiny, tiny_vec, tiny_pairs):
    """Layers offloaded to disk hold meta placeholders between calls: the twin cannot share
    them, so generation takes the bridged path, which accelerate materialises block by block."""
    offloaded = wb.load_model(
        "tiny-instruct", device_map={**GROUPS, "model.layers.2": "disk", "model.layers.3": "disk"}
    )
    assert wb.model_info(offloaded).device == "cpu,disk"
    assert twin(offloaded) is None
    prompts, rows = _prompts(13), mixed_rows(tiny_vec)
    want = wb.generate_table(tiny, prompts, rows, max_new_tokens=8, batch_size=5)
    got = wb.generate_table(offloaded, prompts, rows, max_new_tokens=8, batch_size=5)
    assert list(got["token_ids"]) == list(want["token_ids"])
    a, b = wb.cache_pairs(tiny, tiny_pairs), wb.cache_pairs(offloaded, tiny_pairs)
    assert torch.equal(a.with_instruction, b.with_instruction)


def test_auto_maps_on_a_machine_without_gpus_stay_on_the_cpu(tiny, tiny_vec):
    auto = wb.load_model("tiny-instruct", device_map="auto")
    assert set(devices.placement(auto)) <= {"cpu"} or CUDA
    want = wb.generate_table(tiny, PROMPTS, [[wb.Steering(tiny_vec, 2, "adjust")]] * 4, max_new_tokens=6)
    got = wb.generate_table(auto, PROMPTS, [[wb.Steering(tiny_vec, 2, "adjust")]] * 4, max_new_tokens=6)
    if not CUDA:
        assert list(got["token_ids"]) == list(want["token_ids"])


@pytest.mark.slow
def test_smollm_split_in_groups_gives_the_tokens_and_caches_of_the_whole(smollm, smollm_vec):
    groups = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.norm": "cpu",
        "lm_head": "cpu",
        **{f"model.layers.{i}": "cpu" for i in range(30)},
    }
    split = wb.load_model("smollm2-135m-instruct", device_map=groups)
    assert twin(split) is not None
    rows = [
        [wb.Steering(smollm_vec, 10, "adjust")],
        [wb.Steering(smollm_vec, 15, "add", 4.0, "generated")],
        [wb.Steering(smollm_vec, 10, "ablate", 1.0, (-1,))],
        [],
    ]
    want = wb.generate_table(smollm, PROMPTS, rows, max_new_tokens=16)
    got = wb.generate_table(split, PROMPTS, rows, max_new_tokens=16)
    assert list(got["token_ids"]) == list(want["token_ids"])
    pairs = wb.instruction_pairs(PROMPTS, "change_case:english_capital", seed=0)
    a = wb.cache_pairs(smollm, pairs, layers=[5, 29])
    b = wb.cache_pairs(split, pairs, layers=[5, 29])
    assert torch.equal(a.with_instruction, b.with_instruction)


# on a GPU (skipped without CUDA)
@gpu
@needs_cuda
def test_cuda_fp32_tokens_equal_the_cpus(tiny, tiny_vec, tiny_pairs):
    cuda = wb.load_model("tiny-instruct", device="cuda")
    assert next(cuda.original_model.parameters()).device.type == "cuda"
    assert wb.model_info(cuda).device == "cuda:0"
    prompts, rows = _prompts(13), mixed_rows(tiny_vec)
    want = wb.generate_table(tiny, prompts, rows, max_new_tokens=12)
    got = wb.generate_table(cuda, prompts, rows, max_new_tokens=12)
    assert list(got["token_ids"]) == list(want["token_ids"])
    a, b = wb.cache_pairs(tiny, tiny_pairs), wb.cache_pairs(cuda, tiny_pairs)
    assert b.with_instruction.device.type == "cpu"
    torch.testing.assert_close(a.with_instruction, b.with_instruction, rtol=1e-4, atol=1e-4)
    ppl = wb.fluency.perplexity(cuda, ["a short text"])
    assert ppl[0] == pytest.approx(wb.fluency.perplexity(tiny, ["a short text"])[0], rel=1e-3)


@gpu
@needs_cuda
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cuda_half_precision_runs(tiny_vec, dtype):
    cuda = wb.load_model("tiny-instruct", device="cuda", dtype=dtype)
    table = wb.generate_table(
        cuda, _prompts(13), mixed_rows(tiny_vec), max_new_tokens=8, sampling=wb.Sampling(temperature=0.7, seed=1)
    )
    assert len(table) == 13 and set(table["finish_reason"]) <= {"eos", "length"}


@gpu
@needs_cuda
def test_cuda_device_map_gives_the_tokens_of_the_whole(tiny_vec):
    whole = wb.load_model("tiny-instruct", device="cuda")
    last = torch.cuda.device_count() - 1  # two GPUs where there are two: a real split
    split = wb.load_model(
        "tiny-instruct",
        device_map={**{k: 0 for k in GROUPS}, "model.layers.2": last, "model.layers.3": last, "model.norm": last},
    )
    prompts, rows = _prompts(13), mixed_rows(tiny_vec)
    want = wb.generate_table(whole, prompts, rows, max_new_tokens=12)
    got = wb.generate_table(split, prompts, rows, max_new_tokens=12)
    assert list(got["token_ids"]) == list(want["token_ids"])
