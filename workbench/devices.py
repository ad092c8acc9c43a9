"""Where a model's weights go: dtypes and devices by name, one device or a device_map split.

In a notebook:

    as_dtype("bf16"), as_device("cuda:1")             # checked before any weights are read
    hf_model = place(hf_model, None, "auto")          # accelerate's split over every visible GPU
    placement(model), input_device(model)             # where the weights sit, where inputs go
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, TypeAlias

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
# device_map strings that ask accelerate to plan the split; any other string is one device
AUTO_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
# a device_map: one of AUTO_MAPS (or one device's name), or module name -> GPU index, device or "disk"
DeviceMap: TypeAlias = str | dict[str, int | str]


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


def place(hf_model: nn.Module, device: torch.device | None, device_map: DeviceMap | None) -> nn.Module:
    """`hf_model` (on the CPU) moved to `device`, or dispatched over `device_map` with accelerate's
    hooks: each block runs where its weights are and its inputs follow it there."""
    if device_map is None:
        return hf_model.to(device)
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    if isinstance(device_map, str) and device_map not in AUTO_MAPS:
        device_map = {"": str(as_device(device_map))}
    if isinstance(device_map, str):
        no_split = getattr(hf_model, "_no_split_modules", None) or []
        dtype = getattr(hf_model, "dtype", None)
        memory = (
            None
            if device_map == "sequential"
            else get_balanced_memory(
                hf_model, no_split_module_classes=no_split, dtype=dtype, low_zero=device_map == "balanced_low_0"
            )
        )
        device_map = infer_auto_device_map(hf_model, max_memory=memory, dtype=dtype, no_split_module_classes=no_split)
    assert isinstance(device_map, dict)  # the string forms were planned into a map above
    device_map = {k: _map_value(v) for k, v in device_map.items()}
    level = logging.getLogger("accelerate").level
    logging.getLogger("accelerate").setLevel(logging.ERROR)  # "offloaded to the cpu" for any map with cpu
    try:
        placed: nn.Module = dispatch_model(
            hf_model,
            device_map=device_map,
            force_hooks=True,
            offload_dir=_offload_dir() if "disk" in device_map.values() else None,
        )
        return placed
    finally:
        logging.getLogger("accelerate").setLevel(level)


def _map_value(value: int | str) -> int | str:
    """A device_map entry as accelerate takes it: GPU indices stay ints, "disk" stays "disk"."""
    if isinstance(value, int) or value == "disk":
        return value
    device = as_device(value)
    return device.index if device.type == "cuda" and device.index is not None else str(device)


def _offload_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="workbench-offload-")


def placement(model: nn.Module) -> list[str]:
    """The devices the weights of `model` (a bridge, or a transformers model) sit on, in module
    order ("disk" for offloaded weights)."""
    hf = hf_model(model)
    device_map = getattr(hf, "hf_device_map", None)
    if device_map:
        values = [
            f"cuda:{v}" if isinstance(v, int) else str(torch.device(v)) if v != "disk" else v
            for v in device_map.values()
        ]
    else:
        values = [str(p.device) for p in hf.parameters()]
    return list(dict.fromkeys(values))


def input_device(model: nn.Module) -> torch.device:
    """Where a forward pass of `model` (a bridge, or a transformers model) takes its input ids:
    the input embedding's execution device (the first GPU of a device_map split; an offloaded
    embedding runs on the map's main device)."""
    embed = hf_model(model).get_input_embeddings()
    execution = getattr(getattr(embed, "_hf_hook", None), "execution_device", None)
    if execution is not None:
        return torch.device(execution)
    return torch.device(next(embed.parameters()).device)


def hf_model(model: nn.Module) -> PreTrainedModel:
    """The transformers model of `model`: a bridge's `original_model`, or `model` itself."""
    from transformers import PreTrainedModel

    hf = getattr(model, "original_model", model)
    if not isinstance(hf, PreTrainedModel):
        raise TypeError(f"expected a bridge or a transformers model, got a {type(hf).__name__}")
    return hf
