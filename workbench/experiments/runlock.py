"""The lock on a run directory: one process at a time appends to its generations.jsonl.

lock = RunLock.acquire(path)       # refused (ValueError, naming the holder's pid) while another process holds it
lock.release()
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, ClassVar

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]  # the module or None: checked before each use


class RunLock:
    """An advisory lock on a run directory (flock on run.lock, which names the holder's pid).
    Shared within one process, so a process may open its own run again (run, then resume)."""

    held: ClassVar[dict[Path, RunLock]] = {}  # by resolved path: the locks this process holds

    def __init__(self, key: Path, file: IO[str]) -> None:
        self.key, self.file, self.users = key, file, 0

    @classmethod
    def acquire(cls, path: Path) -> RunLock:
        key = path.resolve()
        lock = cls.held.get(key)
        if lock is None:
            # held open for as long as the lock is ("a+": keep the holder's pid); closed by release()
            file = open(key / "run.lock", "a+", encoding="utf-8")  # noqa: SIM115
            if fcntl is not None:  # Windows: no advisory locks; runs are then not guarded
                try:
                    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    file.seek(0)
                    pid = file.read().strip() or "unknown"
                    file.close()
                    raise ValueError(
                        f"{path} is in use by another run (pid {pid}): two runs "
                        f"appending to one directory would each generate every job. "
                        f"Fix: wait for it to finish, or pass another --out."
                    ) from None
            file.truncate(0)
            file.write(str(os.getpid()))
            file.flush()
            lock = cls.held[key] = cls(key, file)
        lock.users += 1
        return lock

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.held.pop(self.key, None)
            self.file.close()  # closing the file releases the flock
