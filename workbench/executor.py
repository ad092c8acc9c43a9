"""Where an experiment's generation batches run: in this process (the default), or on Ray actors
that each hold one copy of the model, one per GPU or per group of CPU cores.

    from workbench.executor import RayExecutor
    with RayExecutor(workers=2) as ex:                       # a local Ray; address=... joins a cluster
        run_format(cfg, "runs/format", executor=ex)          # every run_* and run_jobs take executor=

An executor only runs work: `imap(model, work, tasks)` calls `work(copy, task)` for each task,
where `copy` is the model (here) or the worker's own copy of it (loaded with wb.load_model from
`models.recipe(model)`, its weight hash checked), and yields the results as they finish, in any
order. The driver alone writes the run directory (experiments/jobs.py appends each result as it
arrives), so a killed run resumes as it does in one process.

A worker that dies mid-task (killed, out of memory) is replaced by a fresh one, and its task goes
to the next free worker; a task whose workers died `max_retries` times stops the run with an
error, and a re-run resumes it. Ray is the optional extra `scale` (pip install -e .[scale]).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Self

import torch

from workbench.devices import placement
from workbench.models import model_info, recipe
from workbench.ray_worker import PoolSpec, Worker
from workbench.types import ResultT, TaskT, Work

if TYPE_CHECKING:
    from workbench.types import Model
_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HOME",
    "WORKBENCH_CACHE",
    "OMP_WAIT_POLICY",
)  # passed on to workers: offline, the same caches


class Executor(Protocol):
    """Where tasks run: `imap(model, work, tasks)` yields work(a copy of model, task) for each
    task as it finishes (in any order); `describe()` is its provenance for run.json."""

    def imap(self, model: Model, work: Work[TaskT, ResultT], tasks: Sequence[TaskT]) -> Iterator[ResultT]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class LocalExecutor:
    """Every task in this process, in order, on the driver's model."""

    def imap(self, model: Model, work: Work[TaskT, ResultT], tasks: Sequence[TaskT]) -> Iterator[ResultT]:
        for task in tasks:
            yield work(model, task)

    def describe(self) -> dict[str, Any]:
        return dict(kind="local", threads=torch.get_num_threads())

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


LOCAL = LocalExecutor()


class MissingExtra(ModuleNotFoundError):
    """Ray is not installed."""


def _ray() -> Any:  # the ray module (untyped here: an optional extra)
    try:
        import ray
    except ModuleNotFoundError:
        raise MissingExtra(
            "--workers and --ray-address need Ray, which is not installed. Fix: "
            "pip install -e .[scale]  (or: pip install 'ray>=2.40')"
        ) from None
    return ray


class RayExecutor:
    """Tasks spread over `workers` Ray actors, each holding one model copy.

    address: None starts a local Ray (or uses the one this process already started); "auto" or
    "ray://host:10001" joins a cluster. workers: the number of actors (default: one per GPU of
    the cluster for a model on CUDA, else one per `threads` CPUs). A worker runs where the
    driver's model runs: a model on CUDA gives each worker `gpus_per_worker` GPUs (a model split
    by a device_map is split again over them, device_map="auto"); a model on the CPU gives each
    worker `threads` CPU cores (default: the CPUs over the workers) and torch.set_num_threads.
    crash_once: a file path, for tests of faults only: the first task any worker takes makes
    that worker exit hard (os._exit), as a killed one would, and creates the file.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        address: str | None = None,
        threads: int | None = None,
        gpus_per_worker: int = 1,
        max_retries: int = 3,
        crash_once: str | None = None,
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        ray = _ray()
        self.ray = ray
        if not ray.is_initialized():
            if address is None:
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="ERROR")
            else:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        self.workers, self.threads, self.gpus_per_worker = workers, threads, gpus_per_worker
        self.address, self.max_retries, self.crash_once = address, max_retries, crash_once
        self._key: tuple[str, ...] | None = None  # the model the pool holds
        self._pool: list[Any] = []  # Ray actor handles (dynamic: their methods are made remote)
        self._spec: PoolSpec | None = None

    # the pool: one per model, made when a model is first given, kept across imap calls
    def _ensure_pool(self, model: Model) -> None:
        info = model_info(model)
        key = (info.name, info.weight_hash, info.dtype, info.device)
        if key == self._key and self._pool:
            return
        self.close_pool()
        on_cuda = any(d.startswith("cuda") for d in placement(model))
        split = len([d for d in placement(model) if d != "disk"]) > 1
        free = self._free_resources()  # what other work on the cluster leaves
        if on_cuda:
            gpus = int(free.get("GPU", 0))
            n = self.workers or gpus // self.gpus_per_worker
            options: dict[str, Any] = dict(num_gpus=self.gpus_per_worker, num_cpus=1)
            where = dict(device_map="auto") if split or self.gpus_per_worker > 1 else dict(device="cuda")
            threads: int | None = None
            need, have, what = n * self.gpus_per_worker, gpus, "GPU"
        else:
            cpus = int(free.get("CPU", 0))
            threads = self.threads or max(1, cpus // (self.workers or 1))
            n = self.workers or max(1, cpus // threads)
            options = dict(num_cpus=threads)
            where = dict(device="cpu")
            need, have, what = n * threads, cpus, "CPU"
        if n < 1 or need > have:  # Ray would wait for them for ever
            raise ValueError(
                f"{max(n, 1)} worker(s) need {max(need, 1)} {what}(s) but the Ray cluster "
                f"has {have} free. Fix: fewer --workers"
                + (", or --device cpu" if on_cuda else "")
                + ", or a bigger cluster"
            )
        env = {k: os.environ[k] for k in _ENV if k in os.environ}
        options["runtime_env"] = {"env_vars": env} if env else None
        self._spec = PoolSpec(
            recipe=recipe(model), where=where, threads=threads, weight_hash=info.weight_hash, options=options
        )
        self._pool = [self._start() for _ in range(n)]
        self._key = key

    def _free_resources(self, settle: float = 10.0) -> dict[str, float]:
        """The cluster's free resources, once they stop rising (workers just killed give theirs
        back a moment later)."""
        import time

        free: dict[str, float] = self.ray.available_resources()
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now: dict[str, float] = self.ray.available_resources()
            if all(now.get(k, 0) <= free.get(k, 0) for k in ("CPU", "GPU")):
                return now
            free = now
        return free

    def _start(self) -> Any:
        spec = self._spec
        assert spec is not None  # _ensure_pool sets it before any worker starts
        actor_cls = self.ray.remote(Worker)
        return actor_cls.options(max_restarts=0, max_task_retries=0, **spec["options"]).remote(
            spec["recipe"], spec["where"], spec["threads"], spec["weight_hash"], self.crash_once
        )

    def imap(self, model: Model, work: Work[TaskT, ResultT], tasks: Sequence[TaskT]) -> Iterator[ResultT]:
        """Results of work(copy, task), as each finishes; a task whose worker died is run again
        on another (replaced workers load the model afresh)."""
        from ray.exceptions import RayActorError, RayTaskError

        self._ensure_pool(model)
        pending = deque(enumerate(tasks))
        deaths = [0] * len(pending)
        idle = list(self._pool)
        running: dict[Any, tuple[Any, int, TaskT]] = {}  # object ref -> (actor, index, task)
        try:
            while pending or running:
                while idle and pending:
                    actor = idle.pop(0)
                    index, task = pending.popleft()
                    running[actor.run.remote(work, task)] = (actor, index, task)
                [ref], _ = self.ray.wait(list(running), num_returns=1)
                actor, index, task = running.pop(ref)
                try:
                    result: ResultT = self.ray.get(ref)
                except RayTaskError as err:  # the work raised: raise it here, as in one process
                    cause = getattr(err, "cause", None)
                    raise (cause if isinstance(cause, Exception) else err) from None
                except RayActorError as err:  # the worker died (killed, out of memory, exited)
                    deaths[index] += 1
                    if deaths[index] > self.max_retries:
                        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                        raise RuntimeError(
                            f"task {index} lost its worker {deaths[index]} times "
                            f"(last: {why}). Nothing finished was lost: run the "
                            f"same command again to resume"
                        ) from None
                    fresh = self._replace(actor)
                    pending.appendleft((index, task))
                    idle.append(fresh)
                    continue
                idle.append(actor)
                yield result
        finally:
            if running:  # stopped early (an error, or the caller stopped reading): start afresh
                self.close_pool()

    def _replace(self, dead: Any) -> Any:
        try:
            self.ray.kill(dead, no_restart=True)
        except Exception:  # noqa: BLE001, S110 (already gone: Ray raises its own types for that)
            pass
        fresh = self._start()
        self._pool = [fresh if a is dead else a for a in self._pool]
        return fresh

    @property
    def actors(self) -> list[Any]:
        """The live worker handles (tests kill one with ray.kill)."""
        return list(self._pool)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(kind="ray", address=self.address or "local", workers=len(self._pool) or self.workers)
        if self._spec:
            out.update(
                where=self._spec["where"],
                threads=self._spec["threads"],
                gpus_per_worker=self._spec["options"].get("num_gpus", 0),
            )
        return out

    def close_pool(self) -> None:
        """Stop the workers and wait until they are gone (their resources are free again)."""
        from ray.exceptions import GetTimeoutError, RayActorError

        for actor in self._pool:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001, S110 (already gone: Ray raises its own types for that)
                pass
        for actor in self._pool:
            try:
                self.ray.get(actor.ping.remote(), timeout=30)
            except (RayActorError, GetTimeoutError):
                pass
        self._pool, self._key = [], None

    def close(self) -> None:
        """Stop the workers (the Ray session itself stays for this process)."""
        self.close_pool()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_executor(
    workers: int | None = None, address: str | None = None, *, threads: int | None = None, gpus_per_worker: int = 1
) -> Executor:
    """The CLI's choice: no workers and no address is this process (LOCAL); else Ray."""
    if workers is None and address is None:
        return LOCAL
    return RayExecutor(workers, address=address, threads=threads, gpus_per_worker=gpus_per_worker)
