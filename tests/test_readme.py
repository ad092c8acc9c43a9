"""Every ```python block of the README runs as written (in a fresh process, in a scratch directory).
Examples that need hardware this machine lacks (CUDA GPUs) are fenced ```py and say so."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_the_readme_has_python_blocks():
    assert _blocks()


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_block_runs(index, tmp_path):
    code = _blocks()[index]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, check=False, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, f"README block {index} failed:\n{code}\n{out.stderr[-3000:]}"
