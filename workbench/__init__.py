"""workbench: instruction activation steering on TransformerLens (Stolfo et al., ICLR 2025)."""
from workbench.data import IFEvalRow
from workbench.models import ModelInfo, list_models, load_model, model_info

__all__ = ["IFEvalRow", "ModelInfo", "list_models", "load_model", "model_info"]
