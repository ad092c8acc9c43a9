"""Analyses of instruction vectors and their activations. Inputs are the workbench's own
objects (SteeringVector, PairActivations; layers taken from them and checked) or plain tensors
with `layers=`; every function returns a tidy pandas DataFrame (except `fit_linear_map`, which
returns a map, `project_out` and `control_vector`, which return vectors, and
`cross_application_matrix`, a display pivot).

    from workbench import analysis as A
    A.cosine_matrix({"lower": vec1, "json": vec2, "control": A.control_vector(model, queries)})
    A.separation(A.projection_separation(held_out_acts, vec1))
    A.separation_intervals(A.projection_separation(held_out_acts, vec1), n_boot=1000)
    A.logit_lens(model, vec1)                       # what the vector promotes, per layer
"""

from workbench.analysis.controls import control_vector, project_out
from workbench.analysis.embedding import difference_embedding
from workbench.analysis.geometry import (
    cosine_matrix,
    pairwise_cosine_cases,
    random_cosine_band,
    split_half_stability,
)
from workbench.analysis.intervals import bootstrap_cosines, separation_intervals
from workbench.analysis.linear_map import LinearMap, fit_linear_map, load_linear_map, save_linear_map
from workbench.analysis.logit_lens import (
    difference_logit_lens,
    direction_logits,
    lens_agreement,
    lens_logits,
    logit_lens,
)
from workbench.analysis.model_map import ModelMaps, aligned_positions, fit_model_maps, paired_residuals
from workbench.analysis.projection import projection_separation, separation
from workbench.analysis.transfer import (
    compare_mapped,
    cross_application_matrix,
    cross_model_cosine,
    matched_layers,
    target_matched_layers,
)

__all__ = [
    "LinearMap",
    "ModelMaps",
    "aligned_positions",
    "bootstrap_cosines",
    "compare_mapped",
    "control_vector",
    "cosine_matrix",
    "cross_application_matrix",
    "cross_model_cosine",
    "difference_embedding",
    "difference_logit_lens",
    "direction_logits",
    "fit_linear_map",
    "fit_model_maps",
    "lens_agreement",
    "lens_logits",
    "load_linear_map",
    "logit_lens",
    "matched_layers",
    "paired_residuals",
    "pairwise_cosine_cases",
    "project_out",
    "projection_separation",
    "random_cosine_band",
    "save_linear_map",
    "separation",
    "separation_intervals",
    "split_half_stability",
    "target_matched_layers",
]
