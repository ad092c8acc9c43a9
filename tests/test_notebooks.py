"""Every notebook in notebooks/ runs top to bottom at small sizes and shows results.

Each notebook is executed into a temporary copy (the committed file is never touched) by the
same code as `scripts/run_notebooks.py`, with WB_NB_* environment variables that its
`parameters` cell reads. A failing cell fails the test with the cell's traceback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# Small sizes for every notebook; a notebook ignores the variables it does not read.
CI_ENV = {
    "WB_NB_PAIRS": "8",
    "WB_NB_VAL_PAIRS": "6",
    "WB_NB_PROMPTS": "2",
    "WB_NB_NEW_TOKENS": "8",
    "WB_NB_SWEEP_WEIGHTS": "1",
    "WB_NB_SWEEP_LAYER_STEP": "12",
    "WB_NB_TEXTS": "24",
    "WB_NB_RENDERER": "plotly_mimetype",  # no PNG: CI needs no Chromium for this
    "TQDM_DISABLE": "1",
}
CELL_TIMEOUT = 300  # seconds; generous for a loaded CI machine
RICH = {"application/vnd.plotly.v1+json", "image/png", "text/html"}  # figures and DataFrames


def _load_runner():
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_notebooks"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


runner = _load_runner()


def test_notebooks_are_found():
    assert NOTEBOOKS, "no notebooks found under notebooks/"
    assert [p.stem for p in runner.notebooks()] == [p.stem for p in NOTEBOOKS]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch):
    import nbformat  # not importorskip: a missing test extra must fail, not skip

    for key, value in runner.KERNEL_ENV.items():
        if key not in os.environ:
            monkeypatch.setenv(key, value)
    for key, value in CI_ENV.items():
        monkeypatch.setenv(key, value)
    runner.check_kernel()
    committed = path.read_bytes()

    out = tmp_path / path.name
    runner.execute(path, out, timeout=CELL_TIMEOUT)  # raises CellExecutionError on any failing cell

    assert path.read_bytes() == committed, "executing the notebook changed the committed copy"
    nb = nbformat.read(out, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "expected exactly one cell tagged 'parameters'"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "some code cells did not run"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    rich = [o for o in outputs if RICH & set(o.get("data", {}))]
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert figures, "the notebook drew no plotly figure"
    assert len(rich) > len(figures), "the notebook showed no table"
    for fig in figures:  # a figure with no data traces is a silent plotting failure
        data = fig["data"]["application/vnd.plotly.v1+json"]
        spec = json.loads(data) if isinstance(data, str) else data
        assert spec.get("data"), "an empty figure was drawn"
