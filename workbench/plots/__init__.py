"""Figure builders: each takes an analysis DataFrame and returns a plotly Figure, never
showing or saving it. `export` is the one function that writes files.

    from workbench import plots as P
    fig = P.layer_sweep(results)
    P.export(fig, "layer_sweep", out_dir="figures")          # PNG; formats=("png", "html") for HTML too
"""

from workbench.plots.contrast import detect_vs_steer
from workbench.plots.curves import cosine_baselines, projection_curves, separation_curves
from workbench.plots.heatmaps import cosine_heatmap, cosine_heatmap_by_layer, transfer_matrix
from workbench.plots.lens import logit_lens
from workbench.plots.output import ChromiumNotFoundError, export, find_chromium, write_plotlyjs
from workbench.plots.scatter import embedding_scatter, two_by_two_bars
from workbench.plots.search import search_rounds
from workbench.plots.sweeps import layer_sweep, weight_sweep

__all__ = [
    "ChromiumNotFoundError",
    "cosine_baselines",
    "cosine_heatmap",
    "cosine_heatmap_by_layer",
    "detect_vs_steer",
    "embedding_scatter",
    "export",
    "find_chromium",
    "layer_sweep",
    "logit_lens",
    "projection_curves",
    "search_rounds",
    "separation_curves",
    "transfer_matrix",
    "two_by_two_bars",
    "weight_sweep",
    "write_plotlyjs",
]
