"""Model registry and loaders: `load_model(name_or_path)` returns a LoadedModel."""
from flbench.models.loader import SUPPORTED_MODEL_TYPES, LoadedModel, load_model, models

# import for registration side effects
from flbench.models import smollm2 as _smollm2  # noqa: F401
from flbench.models import tiny as _tiny  # noqa: F401

__all__ = ["LoadedModel", "load_model", "models", "SUPPORTED_MODEL_TYPES"]
