"""Figure builders return the expected traces; export writes offline HTML and real PNGs."""

import struct

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from workbench import analysis as A
from workbench import plots as P
from workbench.plots import output as output_module

LAYERS = [0, 2, 4]


def _names(fig: go.Figure) -> list[str]:
    return [t.name for t in fig.data]


def test_layer_sweep_lines_and_no_steering_reference():
    df = pd.DataFrame(
        {
            "instruction": ["lower"] * 4 + ["json"] * 3,
            "layer": [np.nan, 4, 2, 6, 2, 4, 6],
            "accuracy": [0.1, 0.5, 0.3, 0.4, 0.2, 0.6, 0.3],
        }
    )
    fig = P.layer_sweep(df)
    assert _names(fig) == ["lower", "lower: no steering", "json"]
    assert list(fig.data[0].x) == [2, 4, 6]  # sorted by layer
    assert list(fig.data[1].y) == [0.1, 0.1] and list(fig.data[1].x) == [2, 6]
    assert fig.data[1].line.dash == "dash"


def test_layer_sweep_error_bars_from_ci_columns():
    df = pd.DataFrame(
        {"condition": "c", "layer": [1, 2], "accuracy": [0.5, 0.6], "ci_low": [0.4, 0.5], "ci_high": [0.7, 0.7]}
    )
    fig = P.layer_sweep(df, series="condition")
    assert np.allclose(fig.data[0].error_y.array, [0.2, 0.1])
    with pytest.raises(ValueError, match="needs columns"):
        P.layer_sweep(df)  # no "instruction" column


def _vectors():
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(len(LAYERS), 16, generator=g) for k in ("lower", "json", "title")}


def test_cosine_heatmaps():
    df = A.cosine_matrix(_vectors(), LAYERS)
    fig = P.cosine_heatmap(df, layer=2)
    assert len(fig.data) == 1 and isinstance(fig.data[0], go.Heatmap)
    assert list(fig.data[0].x) == ["lower", "json", "title"]
    assert np.allclose(np.diag(np.asarray(fig.data[0].z)), 1, atol=1e-5)
    with pytest.raises(ValueError, match="layer 3"):
        P.cosine_heatmap(df, layer=3)
    anim = P.cosine_heatmap_by_layer(df)
    assert len(anim.data) == 1 and [f.name for f in anim.frames] == ["0", "2", "4"]
    assert len(anim.layout.sliders[0].steps) == 3


def test_cosine_baselines_band_range_and_split_halves():
    vectors = _vectors()
    cos = A.cosine_matrix(vectors, LAYERS)
    with_, without, _ = _pairs()
    stab = pd.concat(
        [A.split_half_stability(with_, without, LAYERS, n_splits=3).assign(instruction=k) for k in ("lower", "json")]
    )
    band = A.random_cosine_band(16, n=50)
    fig = P.cosine_baselines(cos, stab, band, by_pair=False)
    assert [n.split(",")[0].split(":")[0] for n in _names(fig)] == [
        "random directions",
        "across instructions",
        "across instructions",
        "split-half",
        "split-half",
    ]
    exact = band.set_index("method").loc["exact"]
    assert sorted(set(fig.data[0].y)) == [exact["low"], exact["high"]]
    assert list(fig.data[0].x) == [0, 4, 4, 0]
    # median and range over the 3 distinct pairs of 3 instructions (the diagonal of ones excluded)
    off = cos[cos["instruction_a"] < cos["instruction_b"]].groupby("layer")["cosine"]
    assert np.allclose(fig.data[2].y, off.median()) and max(fig.data[1].y) < 0.999
    assert np.allclose(fig.data[1].y, list(off.max()) + list(off.min())[::-1])
    with pytest.raises(ValueError, match="two instructions"):
        P.cosine_baselines(A.cosine_matrix({"lower": vectors["lower"]}, LAYERS), stab, band)


def _pairs(n=10):
    g = torch.Generator().manual_seed(1)
    without = torch.randn(n, len(LAYERS), 16, generator=g)
    direction = torch.randn(len(LAYERS), 16, generator=g)
    return without + direction, without, direction


def test_projection_and_separation_curves():
    with_, without, direction = _pairs()
    proj = A.projection_separation(with_, without, direction, LAYERS)
    fig = P.projection_curves(proj)
    assert _names(fig) == ["with ± sd", "with", "without ± sd", "without"]
    assert list(fig.data[1].x) == LAYERS

    sep = A.separation(proj)
    fig = P.separation_curves(sep)
    assert _names(fig) == ["AUROC", "Cohen's d"]
    both = pd.concat([sep.assign(instruction="lower"), sep.assign(instruction="json")])
    fig = P.separation_curves(both, series="instruction")
    assert _names(fig) == ["lower", "lower", "json", "json"]
    assert [t.showlegend for t in fig.data] == [True, False, True, False]


def test_embedding_scatter_one_trace_per_label():
    emb = A.difference_embedding(torch.randn(9, 8), ["a", "b", "c"] * 3, method="pca")
    fig = P.embedding_scatter(emb)
    assert _names(fig) == ["a", "b", "c"] and all(len(t.x) == 3 for t in fig.data)


def test_transfer_matrix():
    records = pd.DataFrame(
        {
            "vector_source": ["none", "own", "it"] * 2,
            "target_model": ["2b"] * 3 + ["9b"] * 3,
            "accuracy": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        }
    )
    fig = P.transfer_matrix(A.cross_application_matrix(records))
    assert len(fig.data) == 1 and list(fig.data[0].y) == ["none", "own", "it"] and list(fig.data[0].x) == ["2b", "9b"]
    assert np.asarray(fig.data[0].z)[2, 1] == 0.6


def test_two_by_two_bars():
    df = pd.DataFrame(
        {
            "instruction_in_prompt": [False, False, True, True],
            "steered": [True, False, False, True],
            "accuracy": [0.307, 0.110, 0.699, 0.785],
            "ci_low": [0.24, 0.07, 0.63, 0.72],
            "ci_high": [0.38, 0.16, 0.76, 0.84],
        }
    )
    fig = P.two_by_two_bars(df)
    assert _names(fig) == ["plain", "steered"]
    assert list(fig.data[0].x) == ["no instruction", "instruction in prompt"]
    assert list(fig.data[1].y) == [0.307, 0.785]
    assert np.allclose(fig.data[1].error_y.arrayminus, [0.067, 0.065])
    with pytest.raises(ValueError, match="more than one row"):
        P.two_by_two_bars(pd.concat([df, df.iloc[:1]]))


def test_weight_sweep_two_axes():
    df = pd.DataFrame({"weight": [40, 0, 20], "accuracy": [0.6, 0.3, 0.5], "fluency": [0.7, 0.9, 0.85]})
    fig = P.weight_sweep(df)
    assert _names(fig) == ["accuracy", "fluency"]
    assert list(fig.data[0].x) == [0, 20, 40]
    assert fig.data[1].yaxis == "y2"


def test_export_html_is_self_contained_and_png_is_real(tmp_path):
    fig = P.weight_sweep(pd.DataFrame({"weight": [0, 1], "accuracy": [0.1, 0.2], "fluency": [0.9, 0.8]}))
    fig.update_layout(width=400, height=300)
    # no skip: the project's setup installs chromium, so a missing browser must fail here
    html, png = P.export(fig, "sweep", out_dir=tmp_path / "figs", formats=("html", "png"), scale=1)
    text = html.read_text()
    assert "<script src=" not in text.replace('<script src="data:', "")  # no CDN / external script
    assert "plotly.js v" in text and len(text) > 1_000_000  # the bundle itself is inline
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (400, 300)


def test_missing_browser_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chromium")
    with pytest.raises(P.ChromiumNotFoundError, match="apt-get install -y chromium"):
        P.find_chromium()
    monkeypatch.delenv("BROWSER_PATH")
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(output_module, "_TYPICAL", ())
    with pytest.raises(P.ChromiumNotFoundError, match="never downloads"):
        P.export(go.Figure(), "x", out_dir=tmp_path, formats=("png",))
