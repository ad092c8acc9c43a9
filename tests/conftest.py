"""Shared fixtures: every model is loaded once per session, and no test may leave hooks behind.

Tiers: `tiny`/`tiny_base` are random-weight models built in memory (seconds); `smollm`/`gemma`
are the bundled models read from the safetensors cache that scripts/setup.sh builds (their tests
are marked slow, and CI runs them too).
"""

from __future__ import annotations

import os
import sys

# Beside other busy processes on a 2-core machine, OpenMP workers that spin while they wait make
# every torch op cost a scheduler quantum: one Gemma forward took 3.5 s instead of 0.26 s.
# Passive waiting has to be chosen before torch is imported; conftest is imported first.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The bundled and tiny models need no hub; a test that reached for it would hang on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

import workbench as wb

_LOADED: dict[str, object] = {}


def _load(name: str):
    if name not in _LOADED:
        _LOADED[name] = wb.load_model(name)
    return _LOADED[name]


@pytest.fixture(scope="session")
def tiny():
    return _load("tiny-instruct")


@pytest.fixture(scope="session")
def tiny_base():
    return _load("tiny-base")


@pytest.fixture(scope="session")
def smollm():
    return _load("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma():
    return _load("gemma3-270m")


@pytest.fixture(autouse=True)
def no_leaked_hooks():
    """The model is never left changed: after every test the shared models carry no hooks."""
    yield
    leaked = {name: sorted(m.list_hooks()) for name, m in _LOADED.items() if m.list_hooks()}
    for name in leaked:
        _LOADED[name].reset_hooks(including_permanent=True)
    assert not leaked, f"hooks left on shared models after the test: {leaked}"


SHORT_QUERIES = [
    "What is the capital of France?",
    "Tell me a story about a cat.",
    "How do I bake bread at home?",
    "Name three colors of the rainbow.",
    "Explain why the sky is blue.",
    "Write a short poem about autumn leaves.",
    "Describe a day at the beach.",
    "What should I pack for a hike?",
]


@pytest.fixture(scope="session")
def short_queries():
    return list(SHORT_QUERIES)


@pytest.fixture(scope="session")
def tiny_pairs():
    return wb.instruction_pairs(SHORT_QUERIES, "change_case:english_lowercase", seed=0)


@pytest.fixture(scope="session")
def tiny_acts(tiny, tiny_pairs):
    return wb.cache_pairs(tiny, tiny_pairs, position="last", batch_size=4)


@pytest.fixture(scope="session")
def tiny_vec(tiny_acts):
    return wb.derive(tiny_acts, method="mean_diff")


@pytest.fixture(scope="session")
def smollm_vec(smollm):
    pairs = wb.instruction_pairs(SHORT_QUERIES[:6], "change_case:english_capital", seed=0)
    return wb.derive(wb.cache_pairs(smollm, pairs, layers=[10, 15], position="last", batch_size=6))


def vector_for(
    target, directions: dict[int, torch.Tensor], /, *, z_bars: dict[int, float] | None = None, **meta
) -> wb.SteeringVector:
    """A hand-made steering vector for model `target` (provenance matching it unless `meta`
    overrides, e.g. model="other")."""
    layers = tuple(sorted(directions))
    units = torch.stack([directions[l] / directions[l].norm() for l in layers]).float()
    zb = torch.tensor([float((z_bars or {}).get(l, 0.0)) for l in layers])
    info = target.wb_info
    meta = dict(dict(model=info.name, weight_hash=info.weight_hash, d_model=units.shape[-1], hook="resid_post"), **meta)
    return wb.SteeringVector(units, layers, zb, zb.clone(), torch.ones(len(layers)), meta)


@pytest.fixture(scope="session")
def make_vector():
    return vector_for


def record(model, tokens: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and the activations at `names`, read by hooks added after any active steering
    (hooks run in the order they were added, so these see the steered values)."""
    got: dict[str, torch.Tensor] = {}

    def keeper(name):  # keyed by the name asked for: hook points answer to aliases too
        def keep(act, hook):
            got[name] = act.detach().clone()

        return keep

    with torch.no_grad(), model.hooks(fwd_hooks=[(n, keeper(n)) for n in names]):
        logits = model(tokens)
    return logits.detach().clone(), got


@pytest.fixture(scope="session")
def recorder():
    return record
