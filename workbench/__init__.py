"""workbench: instruction activation steering on TransformerLens (Stolfo et al., ICLR 2025).

In a notebook:

    import workbench as wb
    model = wb.load_model("smollm2-135m-instruct")
    acts = wb.cache_pairs(model, pairs); vec = wb.derive(acts)
    with wb.steer(model, wb.Steering(vec, layer=12, mode="adjust")): ...
"""

from typing import Any

from workbench.cache import AllPositionActivations, PairActivations, cache_pairs, cache_pairs_all_positions
from workbench.data import FORMAT_INSTRUCTIONS, IFEvalRow, format_test_rows, load_ifeval
from workbench.decoding import Sampling
from workbench.derivation import DERIVATION_METHODS, derive
from workbench.generation import generate, generate_reference, generate_table
from workbench.hooks import steer
from workbench.kvcheck import StackError, check_kv_cache
from workbench.models import ModelInfo, list_models, load_model, model_info
from workbench.pairs import PromptPair, base_queries, control_pairs, instruction_pairs, make_pairs, split_queries
from workbench.prompts import PromptFormat, default_format
from workbench.steering import Steering
from workbench.vectors import SteeringVector

__all__ = [
    "DERIVATION_METHODS",
    "FORMAT_INSTRUCTIONS",
    "AllPositionActivations",
    "IFEvalRow",
    "ModelInfo",
    "PairActivations",
    "PromptFormat",
    "PromptPair",
    "Sampling",
    "StackError",
    "Steering",
    "SteeringVector",
    "base_queries",
    "cache_pairs",
    "cache_pairs_all_positions",
    "check_kv_cache",
    "control_pairs",
    "default_format",
    "derive",
    "format_test_rows",
    "generate",
    "generate_reference",
    "generate_table",
    "instruction_pairs",
    "list_models",
    "load_ifeval",
    "load_model",
    "make_pairs",
    "model_info",
    "prompt_level",
    "score_ifeval",
    "split_queries",
    "steer",
]


# submodules reachable as wb.<name> without importing them at `import workbench` (plotly, NLTK
# and the IFEval verifiers cost seconds); the docs and error messages name them this way
_LAZY_MODULES = ("analysis", "fluency", "plots", "report", "scoring", "stats", "viewer", "weights")
_LAZY_NAMES = {"score_ifeval": "scoring", "prompt_level": "scoring"}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(f"workbench.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f"workbench.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
