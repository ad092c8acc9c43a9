"""How close the carried source vectors land to the target's own, per target layer.

For every format instruction, the cosine between the target's own direction and the source's
direction carried to the target (mapped by the run's linear map, at the matched layer), against
the cosine of an own direction with the carried direction of a *different* instruction (the
mean over pairs), and the band two random directions in the target's width fall in (95%).
Reads the run's saved vectors only; no model is loaded. Writes geometry.csv beside this file
and prints the table.

    .venv/bin/python analyses/transfer/geometry.py            # the committed run
    .venv/bin/python analyses/transfer/geometry.py RUN_DIR    # another transfer run

Response language has one vector per language (vectors/*/language__response_language/); each
language counts as one instruction here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

import workbench as wb
from workbench.analysis.geometry import cosine_matrix, random_cosine_band
from workbench.report import md_table

HERE = Path(__file__).resolve().parent


def load_arm(run: Path, arm: str) -> dict[str, wb.SteeringVector]:
    """The arm's vectors by their path under vectors/ARM (the same in every arm)."""
    root = run / "vectors" / arm
    return {str(p.relative_to(root)): wb.SteeringVector.load(p) for p in sorted(root.rglob("*.safetensors"))}


def own_vs_carried(run: Path) -> pd.DataFrame:
    """Per target layer: the same instruction's cosine (mean, min, max over instructions) and
    the different instructions' mean cosine, own direction vs carried direction."""
    own, carried = load_arm(run, "own"), load_arm(run, "carried")
    names = sorted(own.keys() & carried.keys())
    layers = list(next(iter(carried.values())).layers)
    vecs = {f"own/{n}": own[n] for n in names} | {f"carried/{n}": carried[n] for n in names}
    cos = cosine_matrix(vecs, layers)
    cos = cos[cos.instruction_a.str.startswith("own/") & cos.instruction_b.str.startswith("carried/")]
    same = cos.instruction_a.str.removeprefix("own/") == cos.instruction_b.str.removeprefix("carried/")
    by = cos[same].groupby("layer")["cosine"]
    out = pd.DataFrame(
        {
            "same_mean": by.mean(),
            "same_min": by.min(),
            "same_max": by.max(),
            "different_mean": cos[~same].groupby("layer")["cosine"].mean(),
        }
    )
    out["n_instructions"] = len(names)
    return out.reset_index().round(3)


def main(run: Path) -> None:
    table = own_vs_carried(run)
    d_model = wb.SteeringVector.load(next((run / "vectors" / "own").glob("*.safetensors"))).d_model
    band = random_cosine_band(d_model).set_index("method").loc["exact"]
    table.to_csv(HERE / "geometry.csv", index=False)
    print(md_table(table))
    print(f"\nrandom directions in {d_model} dims, 95%: [{band.low:.3f}, {band.high:.3f}]")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "run")
