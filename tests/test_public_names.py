"""Every `wb.<name>` the package's docstrings, error messages and the README mention exists on a
fresh `import workbench` (run in a subprocess, so nothing imported by other tests helps)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mentioned() -> set[str]:
    files = [*ROOT.joinpath("workbench").rglob("*.py"), ROOT / "README.md"]
    names = set()
    for path in files:
        for match in re.finditer(r"\bwb\.([A-Za-z_][\w.]*[A-Za-z_0-9])", path.read_text()):
            names.add(match.group(1))
    return names


def test_every_wb_name_in_the_docs_exists():
    names = sorted(_mentioned())
    assert len(names) > 20  # the pattern finds the mentions
    code = (
        "import functools, sys, workbench as wb\n"
        "missing = []\n"
        "for n in sys.argv[1:]:\n"
        "    try: functools.reduce(getattr, n.split('.'), wb)\n"
        "    except AttributeError: missing.append(n)\n"
        "print('\\n'.join(missing))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *names], check=False, capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"wb names mentioned but missing: {out.stdout.split()}"
