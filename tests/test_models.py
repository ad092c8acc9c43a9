"""Loading: the model list, provenance, offline errors, and the bundled weight cache."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import shutil
import time

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

import workbench as wb
from workbench import weights

BUNDLED_SHAPES = {"smollm2-135m-instruct": (30, 576, "instruct"), "gemma3-270m": (18, 640, "base")}


def test_list_models_columns_and_rows(tiny):
    df = wb.list_models()
    assert list(df.columns) == ["name", "n_layers", "d_model", "kind", "source"]
    assert df["name"].is_unique
    rows = df.set_index("name")
    for name, (n_layers, d_model, kind) in BUNDLED_SHAPES.items():
        assert tuple(rows.loc[name, ["n_layers", "d_model", "kind"]]) == (n_layers, d_model, kind)
    # the tiny rows describe what load_model really builds
    assert tuple(rows.loc["tiny-instruct", ["n_layers", "d_model", "kind"]]) == (
        tiny.cfg.n_layers,
        tiny.cfg.d_model,
        "instruct",
    )
    assert rows.loc["tiny-base", "kind"] == "base"


def test_load_tiny_and_provenance(tiny):
    assert isinstance(tiny, TransformerBridge)
    assert (tiny.cfg.n_layers, tiny.cfg.d_model) == (4, 64)
    info = wb.model_info(tiny)
    assert info is tiny.wb_info
    assert info.name == "tiny-instruct" and info.kind == "instruct"
    assert (info.n_layers, info.d_model) == (4, 64)
    assert len(info.weight_hash) == 64 and int(info.weight_hash, 16) >= 0
    assert info.dtype == "float32"
    assert info.dtype == str(next(tiny.original_model.parameters()).dtype).removeprefix("torch.")
    for lib in ("torch", "transformers", "transformer-lens"):
        assert info.versions[lib] == md.version(lib)
    assert "workbench" in info.versions
    assert info.to_dict()["weight_hash"] == info.weight_hash
    for layer in range(4):
        assert f"blocks.{layer}.hook_resid_post" in tiny.hook_dict


def test_tiny_weight_hash_tracks_the_weights(tiny):
    again = wb.load_model("tiny-instruct")
    other = wb.load_model("tiny-instruct", seed=1)
    assert again.wb_info.weight_hash == tiny.wb_info.weight_hash
    assert other.wb_info.weight_hash != tiny.wb_info.weight_hash
    assert other.wb_info.source != tiny.wb_info.source


def test_model_info_refuses_a_foreign_model():
    with pytest.raises(TypeError, match="wb.load_model"):
        wb.model_info(torch.nn.Linear(2, 2))


def test_unknown_model_offline_names_the_bundled_ones(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ValueError) as err:
        wb.load_model("no-such-org/no-such-model-4f2a")
    message = str(err.value)
    assert "no-such-org/no-such-model-4f2a" in message and "HF_HUB_OFFLINE" in message
    for name in [*weights.BUNDLED, "tiny-instruct", "tiny-base"]:
        assert name in message
    assert time.perf_counter() - start < 30  # offline means no network timeouts


def _fake_cache(directory, files: dict[str, bytes]):
    directory.mkdir(parents=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    sizes = {name: len(data) for name, data in files.items()}
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    (directory / weights.MANIFEST).write_text(json.dumps({"sizes": sizes, "sha256": hashes}))
    return directory


def test_verify_catches_changes_that_keep_every_size(tmp_path):
    """Flipped sign bits in the weights, or another num_hidden_layers in config.json, keep the
    file sizes: the content hashes recorded at write time catch them."""
    files = {"model.safetensors": bytes(range(256)) * 4, "config.json": b'{"num_hidden_layers": 30}'}
    d = _fake_cache(tmp_path / "c", files)
    good = weights.verify(d)
    assert good == weights.content_hash({n: hashlib.sha256(b).hexdigest() for n, b in files.items()})
    flipped = bytearray(files["model.safetensors"])
    flipped[3::4] = bytes(b ^ 0x80 for b in flipped[3::4])  # the sign bit of every fp32 value
    (d / "model.safetensors").write_bytes(bytes(flipped))
    assert weights.is_valid(d)  # sizes unchanged: the quick check cannot see it
    with pytest.raises(weights.CorruptCache, match="model.safetensors"):
        weights.verify(d)
    (d / "model.safetensors").write_bytes(files["model.safetensors"])
    (d / "config.json").write_bytes(b'{"num_hidden_layers": 31}')
    with pytest.raises(weights.CorruptCache, match="config.json"):
        weights.verify(d)
    (d / "config.json").write_bytes(files["config.json"])
    assert weights.verify(d) == good


def test_manifest_without_hashes_is_rebuilt(tmp_path):
    d = _fake_cache(tmp_path / "c", {"model.safetensors": b"x" * 10})
    manifest = json.loads((d / weights.MANIFEST).read_text())
    del manifest["sha256"]  # written before hashes were recorded
    (d / weights.MANIFEST).write_text(json.dumps(manifest))
    assert not weights.is_valid(d)


def test_a_cache_that_stays_corrupt_is_an_error_not_a_loop(tmp_path, monkeypatch):
    """The loader rebuilds a bad cache once; if the rebuilt one is bad too it raises."""
    spec = weights.BUNDLED["smollm2-135m-instruct"]
    calls = []

    def bad_convert(spec, *, force=False):
        calls.append(force)
        d = tmp_path / f"c{len(calls)}"
        _fake_cache(d, {"model.safetensors": b"not weights", "config.json": b"{}"})
        (d / "config.json").write_bytes(b"[]")  # differs from its recorded hash
        return d

    monkeypatch.setattr(weights, "convert", bad_convert)
    with (
        pytest.warns(UserWarning, match="rebuilding"),
        pytest.raises(RuntimeError, match="still unusable after a rebuild") as err,
    ):
        weights.load_cached(spec, torch.float32)
    assert calls == [False, True]
    assert "config.json" in str(err.value) and "Fix:" in str(err.value)


def test_is_valid_checks_every_manifest_entry(tmp_path):
    d = _fake_cache(tmp_path / "c", {"model.safetensors": b"x" * 100, "config.json": b"{}"})
    assert weights.is_valid(d)
    (d / "model.safetensors").write_bytes(b"x" * 99)  # cut short
    assert not weights.is_valid(d)
    (d / "model.safetensors").write_bytes(b"x" * 100)
    (d / "config.json").unlink()
    assert not weights.is_valid(d)
    (d / "config.json").write_bytes(b"{}")
    (d / weights.MANIFEST).write_text("{not json")
    assert not weights.is_valid(d)
    (d / weights.MANIFEST).unlink()
    assert not weights.is_valid(d)
    assert not weights.is_valid(tmp_path / "missing")


def test_cache_dir_follows_workbench_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    spec = weights.BUNDLED["smollm2-135m-instruct"]
    d = weights.cache_dir(spec)
    assert d.is_relative_to(tmp_path)
    assert spec.version in d.name and spec.source_sha256()[:16] in d.name


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUNDLED_SHAPES))
def test_bundled_model_loads_with_hook_names(name, request):
    model = request.getfixturevalue({"smollm2-135m-instruct": "smollm", "gemma3-270m": "gemma"}[name])
    n_layers, d_model, kind = BUNDLED_SHAPES[name]
    assert (model.cfg.n_layers, model.cfg.d_model) == (n_layers, d_model)
    for layer in range(n_layers):
        assert f"blocks.{layer}.hook_resid_post" in model.hook_dict
    assert f"blocks.{n_layers}.hook_resid_post" not in model.hook_dict
    info = wb.model_info(model)
    spec = weights.BUNDLED[name]
    assert (info.name, info.kind, info.dtype) == (name, kind, "float32")
    assert info.weight_hash == weights.verify(weights.cache_dir(spec)) and len(info.weight_hash) == 64
    assert info.lock_hash == wb.models.lock_hash() and len(info.lock_hash) == 64
    assert spec.version in info.source


@pytest.mark.slow
def test_weight_cache_rebuilds_a_truncated_file(tmp_path, monkeypatch, smollm):
    """One real GGUF conversion (25-90 s) into a temporary cache.

    The temporary cache starts as a copy of the one scripts/setup.sh built, with model.safetensors
    cut short: load_model must notice, warn, convert the GGUF again, and load the same weights.
    (Seeding with a copy rather than converting twice halves the cost; the conversion path is
    the same, and the rebuilt cache is checked against the independently built one.)
    """
    spec = weights.BUNDLED["smollm2-135m-instruct"]
    source = weights.convert(spec)  # the setup cache (valid: returns at once)
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    target = weights.cache_dir(spec)
    assert target.is_relative_to(tmp_path)
    target.parent.mkdir(parents=True)
    shutil.copytree(source, target)
    assert weights.is_valid(target)
    manifest = json.loads((target / weights.MANIFEST).read_text())
    assert manifest["source_sha256"] == spec.source_sha256()

    blob = target / "model.safetensors"
    full_size = blob.stat().st_size
    with blob.open("r+b") as f:
        f.truncate(full_size // 2)
    assert not weights.is_valid(target)

    with pytest.warns(UserWarning, match="rebuilding"):
        model = wb.load_model("smollm2-135m-instruct")
    assert weights.is_valid(target)
    assert blob.stat().st_size == full_size
    assert model.wb_info.weight_hash == smollm.wb_info.weight_hash
    assert not list(target.parent.glob(".building-*"))  # the scratch directory is gone
    tokens = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(model(tokens), smollm(tokens))
    del model

    # a second load reads the cache: it must not touch the GGUF file at all
    def no_gguf(self, scratch):
        raise AssertionError("the second load converted again")

    monkeypatch.setattr(weights.BundledModel, "gguf_path", no_gguf)
    manifest_mtime = (target / weights.MANIFEST).stat().st_mtime_ns
    start = time.perf_counter()
    again = wb.load_model("smollm2-135m-instruct")
    assert time.perf_counter() - start < 60
    assert (target / weights.MANIFEST).stat().st_mtime_ns == manifest_mtime
    assert again.cfg.n_layers == 30
    del again

    # flipped sign bits keep the size: the content hash catches them, and the cache is rebuilt
    with blob.open("r+b") as f:
        f.seek(full_size - 4096)
        chunk = bytearray(f.read(4096))
        f.seek(full_size - 4096)
        f.write(bytes(b ^ 0x80 for b in chunk))
    assert weights.is_valid(target)
    monkeypatch.undo()
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    with pytest.warns(UserWarning, match="differ from the hashes"):
        fixed = wb.load_model("smollm2-135m-instruct")
    assert fixed.wb_info.weight_hash == smollm.wb_info.weight_hash
    with torch.no_grad():
        assert torch.equal(fixed(tokens), smollm(tokens))


def test_bundled_tokenizer_encodes_like_autotokenizer(tmp_path, monkeypatch):
    """The bundled tokenizer is built from tokenizer.json by the tokenizers library (no pickle,
    no Python re-parse); it encodes, decodes and templates like AutoTokenizer, once per process."""
    from transformers import AutoTokenizer

    for name in ("smollm2-135m-instruct", "gemma3-270m"):
        source = weights.convert(weights.BUNDLED[name])
        monkeypatch.setattr(weights, "_TOKENIZERS", {})
        text = "<|im_start|>user\nHello, how's it going?  ünïcode 12345<|im_end|><start_of_turn>"
        fresh = AutoTokenizer.from_pretrained(source, add_bos_token=True, local_files_only=True)
        built = weights.cached_tokenizer(source)
        assert built(text)["input_ids"] == fresh(text)["input_ids"]
        assert built(text, add_special_tokens=False)["input_ids"] == fresh(text, add_special_tokens=False)["input_ids"]
        assert built.decode(fresh(text)["input_ids"]) == fresh.decode(fresh(text)["input_ids"])
        assert (built.chat_template, built.padding_side) == (fresh.chat_template, fresh.padding_side)
        assert (built.bos_token, built.eos_token, built.pad_token) == (
            fresh.bos_token,
            fresh.eos_token,
            fresh.pad_token,
        )
        assert weights.cached_tokenizer(source) is built  # one per process
