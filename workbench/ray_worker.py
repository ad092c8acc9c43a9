"""What runs in a Ray worker process: one model copy, loaded once, running tasks one at a time.

    actor = ray.remote(Worker).options(**spec["options"]).remote(spec["recipe"], spec["where"], ...)

The executor (workbench.executor.RayExecutor) starts these actors and is the only caller.
"""

from __future__ import annotations

import os
from typing import Any, TypedDict

import torch

from workbench.types import ResultT, TaskT, Work


class PoolSpec(TypedDict):
    """How the pool's workers start: load_model's recipe and placement, threads, the weight hash
    they must load, and Ray's actor options."""

    recipe: dict[str, Any]
    where: dict[str, Any]  # load_model's device or device_map
    threads: int | None
    weight_hash: str
    options: dict[str, Any]


class Worker:
    """A Ray actor: one model copy, loaded once, running tasks one at a time."""

    def __init__(
        self,
        recipe: dict[str, Any],
        where: dict[str, Any],
        threads: int | None,
        weight_hash: str,
        crash_once: str | None,
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        from workbench.models import load_model

        self.model = load_model(**recipe, **where)
        if self.model.wb_info.weight_hash != weight_hash:
            raise ValueError(
                f"the worker loaded {recipe['name']} with weights "
                f"{self.model.wb_info.weight_hash[:12]}, not the driver's "
                f"{weight_hash[:12]}: every node needs the same weight cache"
            )
        self.crash_once = crash_once

    def ping(self) -> int:
        return os.getpid()

    def run(self, work: Work[TaskT, ResultT], task: TaskT) -> ResultT:
        if self.crash_once and _first_claim(self.crash_once):
            os._exit(1)  # as a killed worker: no exception, no cleanup
        return work(self.model, task)


def _first_claim(path: str) -> bool:
    """True for exactly one caller across processes: whoever creates `path`."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
