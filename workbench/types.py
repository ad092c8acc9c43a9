"""The types the workbench's functions share at their boundary.

    from workbench.types import Model, LayerPair, Hook

`Model` is what every function that takes a model takes: a TransformerLens TransformerBridge as
`wb.load_model` (or `wb.models.bridge`) returns it, with its provenance in `model.wb_info`.
`LayerPair` names the one order of a (source layer, target layer) pair wherever a vector is
carried from one layer, or one model, to another. `Hook` is TransformerLens' hook signature, and
`Work` what an executor (workbench.executor) runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeAlias, TypeVar

from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:  # importing the bridge costs seconds: `import workbench` does not pay for it
    from transformer_lens.hook_points import HookPoint
    from transformer_lens.model_bridge import TransformerBridge

Model: TypeAlias = "TransformerBridge"


class Hook(Protocol):
    """TransformerLens' hook signature, `fn(activation, hook=hook_point)`: a new activation, or
    None to leave it as it is (a hook that only reads)."""

    def __call__(
        self, act: Float[Tensor, "batch pos d_model"], /, hook: HookPoint | None = None
    ) -> Float[Tensor, "batch pos d_model"] | None: ...


NamedHook: TypeAlias = tuple[str, Hook]  # (hook point name, hook), as model.hooks(fwd_hooks=...) takes them

TaskT = TypeVar("TaskT")
ResultT = TypeVar("ResultT")
# what an executor runs: work(model, task) -> result (for Ray, a module-level function or a partial of one)
Work: TypeAlias = Callable[["Model", TaskT], ResultT]


class LayerPair(NamedTuple):
    """A layer of the model a vector comes from and the layer it is carried to (of the same
    model or another): `LayerPair(source=12, target=20)`."""

    source: int
    target: int
