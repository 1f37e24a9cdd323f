"""The zoo: the classic convolutional lineage with one trainer and paper-faithful tables."""

from zoo.registry import create_model, is_model, list_models, model_info, register_model

__all__ = ["create_model", "is_model", "list_models", "model_info", "register_model"]
__version__ = "0.1.0"
