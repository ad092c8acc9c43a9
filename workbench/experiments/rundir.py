"""A run directory: the complete, resumable record of one experiment.

    run = RunDir.open("runs/format", config, model=model, data_hash=...)
    run.record("layer_choice", {...}); run.timing("validation", seconds)
    done = run.generations()             # finished generations, by job id
    run.append_generations(records)      # appended and flushed as each batch finishes

Layout: run.json (configuration, provenance, choices, timings), vectors/*.safetensors,
generations.jsonl (one line per finished generation: a kill -9 loses only the batch in
flight), scores.csv, tables/*.csv, figures/, report.html, summary.md.
Opening an existing directory made for another model, data or configuration is refused, and
so is one another process holds open (run.lock): two runs appending to one generations.jsonl
would each generate every job. Lines of generations.jsonl that cannot be read are moved to
generations.rejected.jsonl, with a warning, and only their jobs are generated again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

from workbench.experiments.runlock import RunLock
from workbench.models import library_versions, lock_hash, model_info

if TYPE_CHECKING:
    from workbench.types import Model


def _json(value: Any) -> Any:
    """`value` (a dataclass instance too) as plain JSON values."""
    plain = asdict(value) if is_dataclass(value) and not isinstance(value, type) else value
    return json.loads(json.dumps(plain, default=str))


def git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, check=False, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            check=False,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class RunDir:
    """Holds the state of one run on disk; every write goes straight to a file."""

    def __init__(self, path: Path) -> None:
        self._lock: RunLock | None = None  # set by open()
        self.path = Path(path)
        self.state: dict[str, Any] = _read_state(self.path / "run.json")

    def close(self) -> None:
        """Release the run directory for other processes (also on garbage collection)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    @classmethod
    def open(cls, path: str | Path, experiment: str, config: Any, *, model: Model, data_hash: str) -> RunDir:
        """Create the run, or resume it when identity (experiment, model, data, config) matches.
        The directory stays locked against other processes while the returned RunDir lives."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        lock = RunLock.acquire(path)
        try:
            run = cls._open(path, experiment, config, model=model, data_hash=data_hash)
        except BaseException:
            lock.release()
            raise
        run._lock = lock
        return run

    @classmethod
    def _open(cls, path: Path, experiment: str, config: Any, *, model: Model, data_hash: str) -> RunDir:
        info = model_info(model)
        identity = dict(
            experiment=experiment,
            model=info.name,
            weight_hash=info.weight_hash,
            data_hash=data_hash,
            config=_json(config),
        )
        run_file = path / "run.json"
        if run_file.exists():
            old = _read_state(run_file)
            diffs = [k for k in identity if not _same(k, old.get("identity", {}).get(k), identity[k])]
            if diffs:
                detail = "; ".join(
                    f"{k}: {old.get('identity', {}).get(k)!r} here, {identity[k]!r} now" for k in diffs if k != "config"
                )
                if "config" in diffs:
                    a, b = old["identity"].get("config", {}), identity["config"]
                    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))  # None = absent
                    detail += "; config differs in " + ", ".join(f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in keys)
                raise ValueError(
                    f"{path} holds a run made with another {', '.join(diffs)} "
                    f"({detail.strip('; ')}). Fix: pass a new --out directory, or the "
                    f"same settings to resume it."
                )
            run = cls(path)
            # when, and from which commit: the code that finished a run may not be the one that began it
            run.state.setdefault("resumed", []).append(dict(at=_now(), git_commit=git_commit()))
            run.save()
            return run
        state = dict(
            identity=identity,
            model_info=info.to_dict(),
            versions=library_versions(),
            lock_hash=lock_hash(),
            git_commit=git_commit(),
            created=_now(),
            choices={},
            timings={},
            notes=[],
        )
        _write_json(run_file, state)
        return cls(path)

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.state["identity"]["config"]
        return config

    def save(self) -> None:
        _write_json(self.path / "run.json", self.state)

    def record(self, key: str, value: Any) -> None:
        self.state["choices"][key] = _json(value)
        self.save()

    def timing(self, phase: str, seconds: float) -> None:
        self.state["timings"][phase] = round(self.state["timings"].get(phase, 0.0) + seconds, 2)
        self.save()

    def file(self, *parts: str) -> Path:
        target = self.path.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    # generations: append-only JSONL, one finished generation per line
    def generations(self) -> dict[str, dict[str, Any]]:
        """The finished generations, by job id. Lines that cannot be read (the last one when a
        kill cut it short, or any corrupt one) are moved to generations.rejected.jsonl with
        their line numbers, so their jobs are generated again and nothing readable is lost."""
        path = self.path / "generations.jsonl"
        if not path.exists():
            return {}
        done: dict[str, dict[str, Any]] = {}
        good: list[bytes] = []
        bad: list[tuple[int, bytes]] = []
        lines = path.read_bytes().split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = _record(line)
            if record is None:
                bad.append((number, line))
                continue
            # records written before row_id existed: their key was unique, so it is the row id
            if "key" in record:
                record.setdefault("row_id", record["key"])
            done[record["job"]] = record
            good.append(line)
        if bad or (lines[-1] != b""):  # set aside what was rejected; end on a newline to append
            self._set_aside(path, good, bad)
        cut_short = len(bad) == 1 and bad[0][0] == len(lines)  # the normal trace of a kill
        if bad and not cut_short:
            numbers = ", ".join(str(n) for n, _ in bad)
            warnings.warn(
                f"{path}: {len(bad)} unreadable line(s) (line {numbers}) "
                f"moved to {path.with_suffix('.rejected.jsonl').name}; their jobs will be "
                f"generated again",
                stacklevel=2,
            )
        return done

    @staticmethod
    def _set_aside(path: Path, good: list[bytes], bad: list[tuple[int, bytes]]) -> None:
        # rejected lines first: a kill between the two writes leaves them in both files, never in neither
        if bad:
            with path.with_suffix(".rejected.jsonl").open("a", encoding="utf-8") as f:
                for number, line in bad:  # surrogateescape keeps bytes that are not UTF-8
                    f.write(json.dumps(dict(line=number, text=line.decode("utf-8", "surrogateescape"))) + "\n")
                _sync(f)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(b"".join(line + b"\n" for line in good))
            _sync(f)
        tmp.replace(path)

    def append_generations(self, records: list[dict[str, Any]]) -> None:
        with (self.path / "generations.jsonl").open("a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            _sync(f)


def _record(line: bytes) -> dict[str, Any] | None:
    """One line of generations.jsonl as a record, or None when it is not one."""
    try:
        record = json.loads(line)
    except ValueError:  # also UnicodeDecodeError
        return None
    return record if isinstance(record, dict) and isinstance(record.get("job"), str) else None


def _sync(f: IO[Any]) -> None:
    f.flush()
    os.fsync(f.fileno())


def _read_state(run_file: Path) -> dict[str, Any]:
    try:
        state = json.loads(run_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{run_file} is not valid JSON (truncated?): {err}. Fix: restore it "
            f"(e.g. from version control), or pass a new --out directory."
        ) from None
    if not isinstance(state, dict):
        raise ValueError(
            f"{run_file} holds no run record (a JSON object). Fix: restore it, or pass a new --out directory."
        )
    return state


def _same(key: str, old: Any, new: Any) -> bool:
    """Identity fields compare equal; in the configuration, a field absent from an older record
    matches a new field left at None (fields added later, e.g. device, keep old runs resumable)."""
    if key != "config" or not isinstance(old, dict) or not isinstance(new, dict):
        return bool(old == new)
    return all(old.get(k) == new.get(k) for k in set(old) | set(new))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:  # synced: a crash leaves the old file or the new one
        f.write(json.dumps(value, indent=1, default=str))
        _sync(f)
    tmp.replace(path)
