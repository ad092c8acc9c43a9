"""An unbridged twin of a bridged model: the plain transformers model class, built on the meta
device and given the bridge's own weight tensors (shared, not copied), for generation at the
speed of unbridged transformers.

TransformerBridge wraps every submodule of the transformers model in a bridge component with
its hook points; a forward pass then makes ~1,760 extra Python module calls on SmolLM2, 25% of a
CPU decode step and more on a GPU. Generation needs only the residual stream after (or before) a
decoder layer, which is exactly what `blocks.{l}.hook_resid_post` (`_pre`) names: the twin
applies the same steering hooks there as plain torch forward hooks.

    tw = twin(model)                         # None when the architecture cannot be twinned
    with twin_hooks(tw, hooks): tw(...)      # hooks: [(hook name, fn(x, hook=None) -> x)]

The twin is built once per model and process (milliseconds: no weights are allocated). It holds
no hooks of its own, so hooks a user added to the bridge would not fire on it: generation uses it
only when the bridge carries no hooks (generation.py).
"""

from __future__ import annotations

import copy
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from workbench.devices import hf_model
from workbench.types import Hook, NamedHook

if TYPE_CHECKING:
    from workbench.types import Model

_TWINS: weakref.WeakKeyDictionary[Model, dict[tuple[str], nn.Module | None]] = weakref.WeakKeyDictionary()
_HOOK = re.compile(r"blocks\.(\d+)\.hook_resid_(post|pre)")
ATTENTION = "sdpa"  # the unbridged baseline's attention; the bridge itself runs eager


def _plain(name: str) -> str:
    return name.replace("._original_component", "")


def twin(model: Model, *, attention: str = ATTENTION) -> nn.Module | None:
    """The plain transformers model sharing `model.original_model`'s tensors, or None when its
    parameters and buffers cannot all be matched by name."""
    key = (attention,)
    cached = _TWINS.get(model)
    if cached is not None and key in cached:
        return cached[key]
    hf = hf_model(model)
    config = copy.deepcopy(hf.config)
    config._attn_implementation = attention
    try:
        with torch.device("meta"):
            tw = type(hf)(config)
    except Exception:  # noqa: BLE001 (an architecture whose constructor needs more than its config)
        return _remember(model, key, None)
    ours = {_plain(k): v for k, v in hf.state_dict(keep_vars=True).items()}
    wanted = tw.state_dict(keep_vars=True)
    if any(k not in ours or ours[k].shape != v.shape for k, v in wanted.items()):
        return _remember(model, key, None)
    tw.load_state_dict({k: ours[k] for k in wanted}, assign=True, strict=True)
    buffers = {_plain(n): b for n, b in hf.named_buffers()}
    for name, buffer in list(tw.named_buffers()):
        if buffer.is_meta:  # non-persistent buffers (rotary frequencies) are not in state_dict
            if name not in buffers:
                return _remember(model, key, None)
            owner, _, leaf = name.rpartition(".")
            tw.get_submodule(owner)._buffers[leaf] = buffers[name]
    if any(t.is_meta for t in [*tw.parameters(), *tw.buffers()]):
        return _remember(model, key, None)
    device_map = getattr(hf, "hf_device_map", None)  # set by accelerate's dispatch under a split
    if device_map:
        _dispatch_like(tw, device_map)
    tw.generation_config = hf.generation_config
    tw.train(False)
    return _remember(model, key, tw)


def _dispatch_like(tw: nn.Module, device_map: dict[str, int | str]) -> None:
    """Give the twin the accelerate hooks its original carries under a device_map split, so each
    block's inputs follow it to its device and the logits come back to the input's device. The
    weights stay where they are and stay shared (offloaded weights were refused above)."""
    import logging

    from accelerate import dispatch_model

    level = logging.getLogger("accelerate").level
    logging.getLogger("accelerate").setLevel(logging.ERROR)  # "offloaded to the cpu": not so here
    try:
        dispatch_model(tw, device_map=dict(device_map), force_hooks=True)
    finally:
        logging.getLogger("accelerate").setLevel(level)


def _remember(model: Model, key: tuple[str], tw: nn.Module | None) -> nn.Module | None:
    _TWINS.setdefault(model, {})[key] = tw
    return tw


def reachable(names: Iterable[str]) -> bool:
    """True when every hook name sits on a residual stream the twin can reach."""
    return all(_HOOK.fullmatch(name) for name in names)


def twin_for(model: Model, names: Iterable[str], *, attention: str = ATTENTION) -> nn.Module | None:
    """The twin to run hooks `names` on, or None when the bridge must run them: a name the twin
    cannot reach, hooks of the user's on the bridge (they would not fire on the twin), or an
    architecture that cannot be twinned. Generation and caching both ask here."""
    if not reachable(names) or model.list_hooks():
        return None
    return twin(model, attention=attention)


def layers_of(tw: nn.Module) -> nn.ModuleList:
    """The twin's decoder layers."""
    layers = tw.get_submodule("model.layers")
    assert isinstance(layers, nn.ModuleList)
    return layers


@contextmanager
def twin_hooks(tw: nn.Module, hooks: Sequence[NamedHook]) -> Iterator[nn.Module]:
    """Apply bridge-named residual hooks to the twin's decoder layers while the block runs;
    every handle is removed on exit, also when the body raises."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name, fn in hooks:
            match = _HOOK.fullmatch(name)
            if match is None:
                raise ValueError(f"the unbridged twin cannot reach hook {name!r}")
            layer = layers_of(tw)[int(match.group(1))]
            if match.group(2) == "post":
                handles.append(layer.register_forward_hook(_post(fn)))
            else:
                handles.append(layer.register_forward_pre_hook(_pre(fn), with_kwargs=True))
        yield tw
    finally:
        for h in handles:
            h.remove()


def _post(fn: Hook) -> Callable[[nn.Module, tuple[Any, ...], Any], Any]:
    """`fn` on a decoder layer's output (a hook that returns None leaves it as it is)."""

    def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor | tuple[Any, ...]) -> Any:
        if isinstance(output, tuple):  # older decoder layers return (hidden_states, ...)
            new = fn(output[0])
            return None if new is None else (new, *output[1:])
        return fn(output)

    return hook


def _pre(fn: Hook) -> Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], Any]:
    """`fn` on a decoder layer's input hidden states, positional or keyword."""

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x = args[0] if args else kwargs["hidden_states"]
        new = fn(x)
        if new is None:
            return None
        if args:
            return (new, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": new}

    return hook
