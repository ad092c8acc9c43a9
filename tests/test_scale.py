"""Jobs on Ray workers: a sweep spread over 2 workers equals the single-process run, a worker
killed mid-run loses and repeats nothing, errors in a worker surface as themselves, and without
Ray the CLI names the extra. One local Ray session serves the module (starting it takes 10-30 s
on a busy 2-core machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench.data import IFEvalRow
from workbench.executor import LOCAL, RayExecutor
from workbench.experiments.jobs import Job, job_batches, run_jobs, vectors_for_all
from workbench.experiments.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
QUERIES = [
    "What is the capital of France?",
    "Tell me a story about a cat.",
    "Hi",
    "How do I bake bread at home?",
    "Name three colors of the rainbow.",
    "Explain why the sky is blue, briefly.",
    "Write a poem.",
    "What should I pack?",
]


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # logical CPUs: the shared pool's 2 workers and a test's own (up to 2) fit at once
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    # the functions below travel by value: the workers cannot import this test module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def sweep(vec) -> list[Job]:
    """A small sweep: every query unsteered and under three modes at two layers."""
    jobs = []
    for i, q in enumerate(QUERIES):
        row = IFEvalRow(f"k{i}", q, ("change_case:english_lowercase",), ({},), q)
        jobs.append(Job(f"none/{i}", q, row, (), dict(query=i)))
        for layer in (1, 3):
            for mode, weight in (("add", 6.0), ("adjust", 1.0), ("ablate", 1.0)):
                spec = wb.Steering(vec, layer, mode, weight, "all" if layer == 1 else "generated")
                jobs.append(Job(f"{mode}/{layer}/{i}", q, row, (spec,), dict(query=i)))
    return jobs


def generate(tmp_path, model, jobs, executor, name="run"):
    with RunDir.open(tmp_path / name, "scale-test", {"n": len(jobs)}, model=model, data_hash="x") as run:
        table = run_jobs(
            run, model, jobs, phase="sweep", max_new_tokens=10, batch_size=4, executor=executor, show_progress=False
        )
    lines = [json.loads(line) for line in (tmp_path / name / "generations.jsonl").read_text().splitlines()]
    return table, lines


@pytest.fixture(scope="module")
def pool(ray_session):
    """Two workers of one thread each, shared by the tests that kill none."""
    with RayExecutor(workers=2, threads=1) as ex:
        yield ex


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny, tiny_vec):
    return generate(tmp_path_factory.mktemp("single"), tiny, sweep(tiny_vec), LOCAL)


def _pid(model, task):
    return os.getpid()


def test_batches_are_fixed_before_any_worker_sees_them(tiny, tiny_vec):
    jobs = sweep(tiny_vec)
    batches = job_batches(tiny, jobs, 4)
    assert sorted(j.id for b in batches for j in b) == sorted(j.id for j in jobs)
    assert all(len(b) == 4 for b in batches[:-1])
    lengths = [len(tiny.tokenizer(j.prompt)["input_ids"]) for b in batches for j in b]
    assert lengths == sorted(lengths, reverse=True)


def test_a_sweep_over_two_workers_equals_one_process(pool, tmp_path, tiny, tiny_vec, single):
    pids = set(pool.imap(tiny, _pid, range(8)))
    table, lines = generate(tmp_path, tiny, sweep(tiny_vec), pool)
    assert pool.describe()["workers"] == 2
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes did the work
    assert table.to_dict("records") == single[0].to_dict("records")
    assert sorted(lines, key=lambda r: r["job"]) == sorted(single[1], key=lambda r: r["job"])
    state = json.loads((tmp_path / "run" / "run.json").read_text())
    assert state["executors"]["sweep"]["kind"] == "ray"


def test_vectors_derived_on_workers_equal_those_derived_here(pool, tmp_path, tiny):
    """The vectors phase on Ray: each vector's pairs cached on a worker, saved by the driver."""
    wanted = {
        iid: (iid, wb.instruction_pairs(QUERIES, iid, seed=0))
        for iid in ("change_case:english_lowercase", "punctuation:no_comma", "detectable_format:title")
    }
    here = vectors_for_all(_run(tmp_path / "here", tiny), tiny, wanted, batch_size=4)
    there = vectors_for_all(_run(tmp_path / "there", tiny), tiny, wanted, batch_size=4, executor=pool)
    assert list(there) == list(wanted)
    for key in wanted:
        assert torch.equal(here[key].vectors, there[key].vectors)
        assert torch.equal(here[key].z_bars, there[key].z_bars)
    assert len(list((tmp_path / "there" / "vectors").glob("*.safetensors"))) == 3
    # a resume reloads them, and runs nothing
    again = vectors_for_all(_run(tmp_path / "there", tiny), tiny, wanted, executor=pool)
    assert all(again[k] == there[k] for k in wanted)


def _run(path, model):
    return RunDir.open(path, "scale-test", {}, model=model, data_hash="x")


def test_a_worker_killed_mid_run_loses_and_repeats_nothing(ray_session, tmp_path, tiny, tiny_vec, single):
    """The first batch any worker takes kills that worker (os._exit, as a kill -9 would): the
    batch runs again on a worker that lives, and every job is written exactly once."""
    crash = tmp_path / "crashed"
    with RayExecutor(workers=2, threads=1, crash_once=str(crash)) as ex:
        table, lines = generate(tmp_path, tiny, sweep(tiny_vec), ex)
    assert crash.exists()  # a worker did die
    ids = [r["job"] for r in lines]
    assert len(ids) == len(set(ids)) == len(sweep(tiny_vec))
    assert sorted(lines, key=lambda r: r["job"]) == sorted(single[1], key=lambda r: r["job"])
    assert table.to_dict("records") == single[0].to_dict("records")


def _always_dies(model, task):
    os._exit(3)


def test_a_task_whose_workers_keep_dying_stops_the_run_and_says_resume(ray_session, tiny):
    with (
        RayExecutor(workers=1, threads=1, max_retries=0) as ex,
        pytest.raises(RuntimeError, match="lost its worker 1 times.*resume"),
    ):
        list(ex.imap(tiny, _always_dies, [0]))


def test_an_error_in_a_worker_is_raised_as_itself(pool, tmp_path, tiny):
    row = IFEvalRow("long", "x", ("change_case:english_lowercase",), ({},), "x")
    too_long = [Job("long", "word " * 2000, row)]
    with pytest.raises(ValueError, match="exceeds the context"):
        generate(tmp_path, tiny, too_long, pool)


def test_the_cli_spreads_an_experiment_over_workers_with_the_same_results(ray_session, tmp_path):
    """reproduce format --workers 2 (joining this process's Ray) writes what one process writes."""
    from typer.testing import CliRunner

    from workbench.cli import app

    args = [
        "reproduce",
        "format",
        "--model",
        "tiny-instruct",
        "--quick",
        "--limit",
        "2",
        "--max-new-tokens",
        "8",
        "--batch-size",
        "4",
    ]
    runs = {}
    for name, extra in (("one", []), ("two", ["--workers", "2"])):
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        runs[name] = sorted(_lines(tmp_path / name / "generations.jsonl"), key=lambda r: r["job"])
    assert runs["one"] == runs["two"]
    state = json.loads((tmp_path / "two" / "run.json").read_text())
    assert {p["kind"] for p in state["executors"].values()} == {"ray"}
    assert set(state["executors"]) == {"vectors", "validation", "test"}
    assert (tmp_path / "one" / "scores.csv").read_text() == (tmp_path / "two" / "scores.csv").read_text()


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_workers_without_ray_name_the_extra(tmp_path):
    """Ray hidden from the import system: --workers is a one-line error naming the extra, and
    nothing was written."""
    code = (
        "import sys; sys.modules['ray'] = None; sys.argv = ['workbench'] + sys.argv[1:]; "
        "from workbench.cli import app; app()"
    )
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "reproduce",
            "format",
            "--model",
            "tiny-instruct",
            "--quick",
            "--workers",
            "2",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "pip install -e .[scale]" in done.stderr
    assert not out.exists()
