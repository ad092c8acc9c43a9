"""The stack check before KV-cached generation: it passes on a working stack and refuses, loudly
and before any text is written, on one whose bridge does not fill the KV cache (the break of
transformers 5.24.0 with TransformerLens 4.3.0, simulated)."""

from __future__ import annotations

import pytest
import transformers

import workbench as wb
from workbench import kvcheck


def _simulate_unfilled_cache(monkeypatch):
    """Every layer's cache update hands back the new keys and values but stores nothing: what
    the bridged model did with transformers 5.24 (get_seq_length() stayed 0)."""
    monkeypatch.setattr(
        transformers.DynamicCache,
        "update",
        lambda self, key_states, value_states, layer_idx, *a, **k: (key_states, value_states),
    )
    monkeypatch.setattr(kvcheck, "_CHECKED", kvcheck.weakref.WeakSet())


def test_check_passes_on_the_locked_stack(tiny):
    wb.check_kv_cache(tiny, force=True)


def test_broken_cache_is_a_loud_error_naming_versions_and_fix(tiny, monkeypatch):
    _simulate_unfilled_cache(monkeypatch)
    with pytest.raises(wb.StackError) as err:
        wb.check_kv_cache(tiny)
    message = str(err.value)
    versions = wb.models.library_versions()
    assert f"transformers {versions['transformers']}" in message
    assert f"transformer-lens {versions['transformer-lens']}" in message
    assert "cache holds 0" in message and "Fix:" in message and "requirements.lock" in message


def test_generate_refuses_before_writing_text(tiny, monkeypatch):
    _simulate_unfilled_cache(monkeypatch)
    calls = []
    monkeypatch.setattr(wb.generation, "decode_batch", lambda *a, **k: calls.append(a))
    with pytest.raises(wb.StackError):
        wb.generate(tiny, ["Hello there"], max_new_tokens=4)
    assert not calls  # nothing generated


def test_the_check_runs_once_per_model(tiny, monkeypatch):
    monkeypatch.setattr(kvcheck, "_CHECKED", kvcheck.weakref.WeakSet())
    wb.check_kv_cache(tiny)
    assert tiny.original_model in kvcheck._CHECKED
    _simulate_unfilled_cache(monkeypatch)
    kvcheck._CHECKED.add(tiny.original_model)
    wb.check_kv_cache(tiny)  # already checked in this process: not run again
    with pytest.raises(wb.StackError):
        wb.check_kv_cache(tiny, force=True)


@pytest.mark.slow
def test_check_passes_on_smollm_quickly(smollm):
    import time

    start = time.perf_counter()
    wb.check_kv_cache(smollm, force=True)
    assert time.perf_counter() - start < 10
