"""Small shared helpers for long runs: batching and progress bars."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def batched(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def progress(items: Iterable[T], desc: str, show: bool | None = None) -> Iterable[T]:
    """A tqdm bar (with ETA) when there is more than one step and `show` is not False."""
    items = list(items)
    if show is False or (show is None and len(items) < 2):
        return items
    from tqdm.auto import tqdm

    bar: Iterable[T] = tqdm(items, desc=desc, file=sys.stderr, leave=False)
    return bar
