"""The benchmarks' baselines compute what the workbench computes, and the report renders the
recorded results: so a ratio in benchmarks/RESULTS.md compares equal work."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench.twin import twin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_baselines, report

LAYER = 2
TOKENS = torch.tensor([[1, 5, 9, 20, 33, 7, 11]])


def _bridge_logits(model, spec):
    with torch.no_grad(), wb.steer(model, spec):
        return model.original_model(input_ids=TOKENS).logits


def test_plain_hook_is_the_workbench_adjust(tiny, tiny_vec):
    """The hand-written forward hook on the unbridged model's decoder layer equals wb's `adjust`
    on the bridge, and is removed with its handle."""
    spec = wb.Steering(tiny_vec, layer=LAYER, mode="adjust", weight=1.0)
    tw = twin(tiny)
    handle = bench_baselines.plain_hook(tw, LAYER, tiny_vec.direction(LAYER).float(), float(tiny_vec.z_bar(LAYER)))
    try:
        with torch.no_grad():
            got = tw(input_ids=TOKENS).logits
    finally:
        handle.remove()
    torch.testing.assert_close(got, _bridge_logits(tiny, spec), rtol=1e-4, atol=1e-4)
    assert not tw.model.layers[LAYER]._forward_hooks
    with torch.no_grad():  # and the steering changed something
        assert not torch.allclose(got, tw(input_ids=TOKENS).logits, atol=1e-3)


def test_peer_apply_is_the_workbench_adjust(tiny, tiny_vec):
    pytest.importorskip("steering_vectors")
    spec = wb.Steering(tiny_vec, layer=LAYER, mode="adjust", weight=1.0)
    tw = twin(tiny)
    apply, error = bench_baselines.peer_apply(
        tw, LAYER, tiny_vec.direction(LAYER).float(), float(tiny_vec.z_bar(LAYER))
    )
    assert error is None
    with torch.no_grad(), apply():
        got = tw(input_ids=TOKENS).logits
    torch.testing.assert_close(got, _bridge_logits(tiny, spec), rtol=1e-4, atol=1e-4)
    assert not tw.model.layers[LAYER]._forward_hooks


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "results").glob("*.json")), ids=lambda p: p.name)
def test_report_renders_recorded_results(path):
    res = json.loads(path.read_text())
    if "benchmarks" not in res or "machine" not in res:
        pytest.skip("one benchmark's part, not a whole run")
    res["targets"] = report.targets(res["benchmarks"])
    text = report.render(res)
    assert text.startswith("Command:") and "### Targets" in text
    for t in res["targets"]:
        assert t["name"] in text
