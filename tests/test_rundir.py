"""The run directory under faults: corrupt generation lines, a kill mid-line, a truncated
run.json, and two runs writing to one directory."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import warnings

import pytest

from workbench.experiments.rundir import RunDir


def _open(path, tiny, **config) -> RunDir:
    return RunDir.open(path, "test", dict(n=1, **config), model=tiny, data_hash="d")


def _records(n: int) -> list[dict]:
    return [dict(job=f"job/{i}", key=str(i), response=f"answer {i}") for i in range(n)]


def _rejected(run: RunDir) -> list[dict]:
    path = run.path / "generations.rejected.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_corrupt_lines_in_the_middle_lose_nothing_else(tmp_path, tiny):
    with _open(tmp_path / "run", tiny) as run:
        run.append_generations(_records(5))
        path = run.path / "generations.jsonl"
        lines = path.read_bytes().split(b"\n")
        lines[1] = b'{"job": "job/1", "resp'  # garbled in place
        lines[3] = b'{"key": "3", "response": "no job field"}'
        path.write_bytes(b"\n".join(lines))
        with pytest.warns(
            UserWarning,
            match=r"generations.jsonl: 2 unreadable line\(s\) \(line 2, 4\) "
            r"moved to generations.rejected.jsonl",
        ):
            done = run.generations()
        assert sorted(done) == ["job/0", "job/2", "job/4"]
        assert done["job/4"]["response"] == "answer 4"
        # the bad lines are set aside with their numbers, the file keeps only the good ones
        assert [(r["line"], r["text"]) for r in _rejected(run)] == [
            (2, '{"job": "job/1", "resp'),
            (4, '{"key": "3", "response": "no job field"}'),
        ]
        assert [json.loads(line)["job"] for line in path.read_text().splitlines()] == ["job/0", "job/2", "job/4"]
        # regenerated jobs append cleanly, and a second read finds nothing to set aside
        run.append_generations([r for r in _records(5) if r["job"] in ("job/1", "job/3")])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert sorted(run.generations()) == [f"job/{i}" for i in range(5)]
        assert len(_rejected(run)) == 2


def test_a_line_cut_short_by_a_kill_is_set_aside_quietly(tmp_path, tiny):
    with _open(tmp_path / "run", tiny) as run:
        run.append_generations(_records(3))
        path = run.path / "generations.jsonl"
        text = path.read_bytes()
        path.write_bytes(text[:-10])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            done = run.generations()
        assert sorted(done) == ["job/0", "job/1"]
        assert [r["line"] for r in _rejected(run)] == [3]
        assert path.read_bytes().endswith(b"\n")  # the next append starts on a line of its own
        run.append_generations(_records(3)[2:])
        assert sorted(run.generations()) == ["job/0", "job/1", "job/2"]


def test_a_whole_last_line_without_its_newline_is_kept(tmp_path, tiny):
    with _open(tmp_path / "run", tiny) as run:
        run.append_generations(_records(2))
        path = run.path / "generations.jsonl"
        path.write_bytes(path.read_bytes().rstrip(b"\n"))
        assert sorted(run.generations()) == ["job/0", "job/1"]
        assert not _rejected(run) and path.read_bytes().endswith(b"\n")


def test_bytes_that_are_not_utf8_are_kept_exactly_in_the_rejected_file(tmp_path, tiny):
    with _open(tmp_path / "run", tiny) as run:
        run.append_generations(_records(2))
        path = run.path / "generations.jsonl"
        bad = b'{"job": "job/9", "response": "caf\xe9"}'
        path.write_bytes(bad + b"\n" + path.read_bytes())
        with pytest.warns(UserWarning, match=r"1 unreadable line\(s\) \(line 1\)"):
            assert sorted(run.generations()) == ["job/0", "job/1"]
        assert _rejected(run)[0]["text"].encode("utf-8", "surrogateescape") == bad


def test_records_from_before_row_ids_take_their_key(tmp_path, tiny):
    with _open(tmp_path / "run", tiny) as run:
        run.append_generations([dict(job="a", key="7"), dict(job="b", key="7", row_id="7#2")])
        done = run.generations()
        assert done["a"]["row_id"] == "7" and done["b"]["row_id"] == "7#2"


def test_a_truncated_run_json_names_the_file_and_the_fix(tmp_path, tiny):
    _open(tmp_path / "run", tiny).close()
    run_file = tmp_path / "run" / "run.json"
    run_file.write_text(run_file.read_text()[:40])
    for attempt in (lambda: _open(tmp_path / "run", tiny), lambda: RunDir(tmp_path / "run")):
        with pytest.raises(
            ValueError,
            match=r"run.json is not valid JSON \(truncated\?\).*Fix: restore "
            r"it .*or pass a new --out",
        ) as err:
            attempt()
        assert str(run_file) in str(err.value)


def _flock_free(path) -> bool:
    """Whether another open file (as another process would hold) could lock run.lock now."""
    with open(path / "run.lock", "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return True


def test_the_run_is_locked_while_open_and_reopened_within_the_process(tmp_path, tiny):
    path = tmp_path / "run"
    first = _open(path, tiny)
    assert not _flock_free(path)
    assert (path / "run.lock").read_text() == str(os.getpid())
    again = _open(path, tiny)  # run, then resume, in one process (as the tests of experiments do)
    first.close()
    assert not _flock_free(path)  # still held by the second
    again.close()
    assert _flock_free(path)
    with _open(path, tiny):
        assert not _flock_free(path)
    assert _flock_free(path)
    _open(path, tiny)  # dropped at once: garbage collection releases it
    assert _flock_free(path)


def test_a_refused_open_leaves_the_run_unlocked(tmp_path, tiny):
    _open(tmp_path / "run", tiny).close()
    with pytest.raises(ValueError, match="another config"):
        _open(tmp_path / "run", tiny, extra=2)
    assert _flock_free(tmp_path / "run")


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path, tiny):
    path = tmp_path / "run"
    _open(path, tiny).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, os, sys, time\n"
                f"f = open({str(path / 'run.lock')!r}, 'a+')\n"
                "fcntl.flock(f.fileno(), fcntl.LOCK_EX)\n"
                "f.truncate(0); f.write(str(os.getpid())); f.flush()\n"
                "print('held', flush=True); time.sleep(60)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            ValueError,
            match=rf"{path} is in use by another run \(pid {holder.pid}\).*"
            rf"Fix: wait for it to finish, or pass another --out",
        ):
            _open(path, tiny)
    finally:
        holder.kill()
        holder.wait()
    _open(path, tiny).close()  # its end (even by kill) frees the directory


def test_a_config_field_added_later_at_none_still_resumes(tmp_path, tiny):
    """A run recorded before a config field existed resumes when the new field is left at None;
    any other value is a different configuration."""
    import json

    from workbench.experiments.rundir import RunDir

    RunDir.open(tmp_path / "r", "demo", {"a": 1}, model=tiny, data_hash="d").close()
    RunDir.open(tmp_path / "r", "demo", {"a": 1, "device": None}, model=tiny, data_hash="d").close()
    with pytest.raises(ValueError, match=r"device \(None -> 'cuda'\)"):
        RunDir.open(tmp_path / "r", "demo", {"a": 1, "device": "cuda"}, model=tiny, data_hash="d")
    assert json.loads((tmp_path / "r" / "run.json").read_text())["identity"]["config"] == {"a": 1}


def test_a_resume_records_its_commit_and_the_header_names_another(tmp_path, tiny, monkeypatch):
    from workbench.experiments import rundir
    from workbench.report import run_header

    monkeypatch.setattr(rundir, "git_commit", lambda: "aaa")
    _open(tmp_path / "run", tiny).close()
    _open(tmp_path / "run", tiny).close()  # resumed at the run's own commit
    monkeypatch.setattr(rundir, "git_commit", lambda: "bbb+dirty")
    run = _open(tmp_path / "run", tiny)
    run.close()
    assert run.state["git_commit"] == "aaa"
    assert [r["git_commit"] for r in run.state["resumed"]] == ["aaa", "bbb+dirty"]
    state = json.loads((tmp_path / "run" / "run.json").read_text())
    header = run_header(state)
    assert (
        header.count("resumed at commit") == 1
        and f"resumed at commit `bbb+dirty` ({state['resumed'][1]['at']})" in header
    )
    # runs recorded before: a resume was a bare time, and is not named
    state["resumed"] = ["2026-11-28T03:27:32+00:00"]
    assert "resumed" not in run_header(state)
