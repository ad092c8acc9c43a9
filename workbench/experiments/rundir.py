"""A run directory: the complete, resumable record of one experiment.

    run = RunDir.open("runs/format", config, model=model, data_hash=...)
    run.record("layer_choice", {...}); run.timing("validation", seconds)
    done = run.generations()             # finished generations, by job id
    run.append_generations(records)      # appended and flushed as each batch finishes

Layout: run.json (configuration, provenance, choices, timings), vectors/*.safetensors,
generations.jsonl (one line per finished generation: a kill -9 loses only the batch in
flight), scores.csv, tables/*.csv, figures/, report.html, summary.md.
Opening an existing directory made for another model, data or configuration is refused.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from workbench.models import library_versions, model_info


def _json(value: Any) -> Any:
    return json.loads(json.dumps(asdict(value) if is_dataclass(value) else value, default=str))


def git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class RunDir:
    """Holds the state of one run on disk; every write goes straight to a file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.state: dict = json.loads((self.path / "run.json").read_text())

    @classmethod
    def open(cls, path: str | Path, experiment: str, config: Any, *, model, data_hash: str) -> RunDir:
        """Create the run, or resume it when identity (experiment, model, data, config) matches."""
        path = Path(path)
        info = model_info(model)
        identity = dict(experiment=experiment, model=info.name, weight_hash=info.weight_hash,
                        data_hash=data_hash, config=_json(config))
        run_file = path / "run.json"
        if run_file.exists():
            old = json.loads(run_file.read_text())
            diffs = [k for k in identity if old.get("identity", {}).get(k) != identity[k]]
            if diffs:
                detail = "; ".join(f"{k}: {old.get('identity', {}).get(k)!r} here, {identity[k]!r} now"
                                   for k in diffs if k != "config")
                if "config" in diffs:
                    a, b = old["identity"].get("config", {}), identity["config"]
                    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                    detail += "; config differs in " + ", ".join(f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in keys)
                raise ValueError(f"{path} holds a run made with another {', '.join(diffs)} "
                                 f"({detail.strip('; ')}). Fix: pass a new --out directory, or the "
                                 f"same settings to resume it.")
            run = cls(path)
            run.state.setdefault("resumed", []).append(_now())
            run.save()
            return run
        path.mkdir(parents=True, exist_ok=True)
        state = dict(identity=identity, model_info=info.to_dict(), versions=library_versions(),
                     git_commit=git_commit(), created=_now(), choices={}, timings={}, notes=[])
        _write_json(run_file, state)
        return cls(path)

    @property
    def config(self) -> dict:
        return self.state["identity"]["config"]

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
    def generations(self) -> dict[str, dict]:
        path = self.path / "generations.jsonl"
        if not path.exists():
            return {}
        done, good_bytes = {}, 0
        with path.open("rb") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:  # the line a kill cut short: drop it, keep the rest
                    break
                if not line.endswith(b"\n"):
                    break
                done[record["job"]] = record
                good_bytes += len(line)
        if good_bytes != path.stat().st_size:
            with path.open("r+b") as f:
                f.truncate(good_bytes)
        return done

    def append_generations(self, records: list[dict]) -> None:
        with (self.path / "generations.jsonl").open("a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=str))
    tmp.replace(path)


def file_hash(*paths: str | Path) -> str:
    digest = hashlib.sha256()
    for p in paths:
        digest.update(Path(p).read_bytes())
    return digest.hexdigest()
