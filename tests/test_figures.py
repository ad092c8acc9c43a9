"""The figures that read at a glance: small multiples, shared reference lines, offset error bars,
a fluency panel, standardized projections, the pair-by-pair cosine view, and PNG-first export."""

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import analysis as A
from workbench import plots as P

LAYERS = [0, 2, 4]


def _sweep(names, conditions=("without", "with")):
    rows = []
    for k, name in enumerate(names):
        for c, cond in enumerate(conditions):
            for layer in [np.nan, *LAYERS]:
                acc = 0.1 * k % 1 if np.isnan(layer) else 0.05 * (layer + c)
                rows.append(
                    dict(
                        instruction=name,
                        condition=cond,
                        layer=layer,
                        accuracy=acc,
                        ci_low=max(acc - 0.1, 0),
                        ci_high=min(acc + 0.1, 1),
                        degenerate=0.1 * c,
                    )
                )
    return pd.DataFrame(rows)


def test_many_instructions_become_small_multiples():
    df = _sweep([f"i{k}" for k in range(7)])
    one = df[df.condition == "without"]
    fig = P.layer_sweep(one)  # 7 > max_lines: one panel per instruction
    titles = [a.text for a in fig.layout.annotations]
    assert titles == [f"i{k}" for k in range(7)]
    lines = [t for t in fig.data if t.name == "accuracy"]
    assert len(lines) == 7 and [t.showlegend for t in lines] == [True] + [False] * 6
    base = [t for t in fig.data if t.name == "no steering"]
    assert len(base) == 7 and sum(bool(t.showlegend) for t in base) == 1
    assert fig.layout.legend.orientation == "h"  # below the panels, never cut off
    assert len({t.xaxis for t in lines}) == 7
    few = P.layer_sweep(one[one.instruction.isin(["i0", "i1"])])
    assert not few.layout.annotations and [t.name for t in few.data][:2] == ["i0", "i0: no steering"]


def test_facets_series_fluency_and_references():
    df = _sweep(["title", "no_comma"])
    refs = df[(df.condition == "with") & df.layer.isna()].assign(reference="instruction in prompt")
    fig = P.layer_sweep(df, series="condition", facet="instruction", fluency="degenerate", references=refs)
    names = [t.name for t in fig.data]
    assert names.count("without") == 2 and names.count("with: no steering") == 2
    assert names.count("without: degenerate") == 2 and names.count("instruction in prompt") == 2
    # the fluency traces sit on their own axes, under the accuracy ones
    acc_axes = {t.yaxis for t in fig.data if t.name in ("without", "with")}
    flu_axes = {t.yaxis for t in fig.data if t.name.endswith("degenerate")}
    assert len(acc_axes) == 2 and len(flu_axes) == 2 and not acc_axes & flu_axes
    ref = [t for t in fig.data if t.name == "instruction in prompt"]
    assert ref[0].line.dash == "dot" and sum(bool(t.showlegend) for t in ref) == 1
    # a reference per panel: each panel's own value
    title_ref = refs[refs.instruction == "title"].accuracy.item()
    assert ref[0].y[0] == title_ref
    # error bars of the series side by side, not on top of each other
    assert fig.layout.scattermode == "group"
    assert {t.offsetgroup for t in fig.data if t.name in ("without", "with")} == {"0", "1"}


def test_layer_sweep_refuses_two_baselines_in_a_panel():
    df = _sweep(["a"])
    with pytest.raises(ValueError, match="no-steering rows"):
        P.layer_sweep(df)  # both conditions' baselines under one series "a"
    assert P.layer_sweep(df, series="condition", facet="instruction") is not None


def _proj():
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 10.0, 100.0])[None, :, None]  # the residual norm grows with depth
    without = torch.randn(30, 3, 8, generator=g) * scale
    direction = torch.randn(3, 8, generator=g)
    return A.projection_separation(
        without + 2 * scale * direction / direction.norm(dim=-1, keepdim=True), without, direction, LAYERS
    )


def test_projection_curves_standardized_reads_as_cohens_d():
    proj = _proj()
    fig = P.projection_curves(proj, standardize=True)
    with_mean, without_mean = np.asarray(fig.data[1].y), np.asarray(fig.data[3].y)
    assert np.allclose(without_mean, 0, atol=1e-6)
    assert np.allclose(with_mean, A.separation(proj).cohens_d, atol=1e-6)
    raw = P.projection_curves(proj)
    assert np.asarray(raw.data[1].y)[2] > 50 * np.asarray(raw.data[1].y)[0]  # flattened early layers
    assert "standardized" in fig.layout.yaxis.title.text


def test_separation_curves_draw_interval_bars():
    proj = _proj()
    sep = A.separation_intervals(proj, n_boot=50)
    fig = P.separation_curves(sep)
    assert np.allclose(fig.data[0].error_y.array, sep.auroc_high - sep.auroc)
    assert np.allclose(fig.data[1].error_y.arrayminus, sep.cohens_d - sep.cohens_d_low)
    assert P.separation_curves(A.separation(proj)).data[0].error_y.array is None


def test_cosine_baselines_pair_by_pair_with_intervals():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(3, 16, generator=g)
    sets = {}
    for k, name in enumerate(("title", "json", "control")):
        without = torch.randn(12, 3, 16, generator=g)
        sets[name] = (without + u + k * torch.randn(3, 16, generator=g) + torch.randn(12, 3, 16, generator=g), without)
    cos = A.bootstrap_cosines(sets, LAYERS, n_boot=50)
    stab = pd.concat([A.split_half_stability(*sets[n], LAYERS, n_splits=3).assign(instruction=n) for n in sets])
    fig = P.cosine_baselines(cos, stab, A.random_cosine_band(16, n=20))
    names = [t.name for t in fig.data]
    assert names[1:7] == [
        "title · json interval",
        "title · json",
        "title · control interval",
        "title · control",
        "json · control interval",
        "json · control",
    ]
    pair = cos[(cos.instruction_a == "json") & (cos.instruction_b == "control")]
    assert np.allclose(fig.data[6].y, pair.cosine)
    assert np.allclose(fig.data[5].y, list(pair.ci_high) + list(pair.ci_low)[::-1])
    summary = P.cosine_baselines(cos, stab, A.random_cosine_band(16, n=20), by_pair=False)
    assert [t.name.split(":")[0] for t in summary.data][1:3] == ["across instructions", "across instructions"]


def test_export_png_by_default_and_one_shared_plotlyjs(tmp_path):
    fig = P.layer_sweep(_sweep(["a"])[lambda d: d.condition == "with"])
    fig.update_layout(width=300, height=200)
    (png,) = P.export(fig, "only", out_dir=tmp_path, scale=1)
    assert png.suffix == ".png" and sorted(p.name for p in tmp_path.iterdir()) == ["only.png"]
    out = tmp_path / "pages"
    first = P.export(fig, "a", out_dir=out, formats=("html",), include_plotlyjs="directory")
    second = P.export(fig, "b", out_dir=out, formats=("html",), include_plotlyjs="directory")
    assert [p.name for p in first] == ["a.html", "plotly.min.js"] and second[-1] == first[-1]
    assert sorted(p.name for p in out.iterdir()) == ["a.html", "b.html", "plotly.min.js"]
    page = (out / "a.html").read_text()
    assert 'src="plotly.min.js"' in page and len(page) < 100_000
    assert (out / "plotly.min.js").stat().st_size > 1_000_000
    (out / "plotly.min.js").write_text("stale")  # another plotly's bundle is replaced
    P.export(fig, "c", out_dir=out, formats=("html",), include_plotlyjs="directory")
    assert (out / "plotly.min.js").stat().st_size > 1_000_000
    with pytest.raises(ValueError, match="offline"):
        P.export(fig, "d", out_dir=out, formats=("html",), include_plotlyjs="cdn")


def test_detect_vs_steer_stars_both_best_layers():
    sep = pd.DataFrame(
        {
            "layer": [0, 2, 4],
            "cohens_d": [3.0, 5.0, 2.0],
            "cohens_d_low": [2.0, 4.0, 1.0],
            "cohens_d_high": [4.0, 6.0, 3.0],
            "auroc": [0.9, 1.0, 0.8],
        }
    )
    steer = pd.DataFrame(
        {
            "layer": [np.nan, 0, 2, 4],
            "accuracy": [0.1, 0.0, 0.1, 0.7],
            "ci_low": [0.0, 0.0, 0.0, 0.4],
            "ci_high": [0.3, 0.2, 0.3, 0.9],
            "degenerate": [0.1, 0.0, 0.5, 0.2],
        }
    )
    refs = pd.DataFrame({"reference": ["instruction in prompt"], "accuracy": [0.8]})
    fig = P.detect_vs_steer(sep, steer, references=refs)
    names = [t.name for t in fig.data]
    assert names == [
        "Cohen's d",
        "best separating: L2",
        "steered: accuracy",
        "no steering",
        "best steering: L4",
        "steered: degenerate",
        "no steering: degenerate",
        "instruction in prompt",
    ]
    assert np.allclose(fig.data[0].error_y.array, [1, 1, 1])
    assert fig.data[6].yaxis != fig.data[2].yaxis  # the fluency panel is its own
    auroc = P.detect_vs_steer(sep, steer.drop(columns="degenerate"), detect="auroc")
    assert [t.name for t in auroc.data][:2] == ["AUROC", "best separating: L2"] and len(auroc.data) == 5
