"""The zoo: the classic convolutional lineage with one trainer and paper-faithful tables."""

from zoo.models.registry import check_input_size, is_model, register_model
from zoo.weights.factory import create_model, list_models, list_pretrained, model_info

__all__ = [
    "check_input_size",
    "create_model",
    "is_model",
    "list_models",
    "list_pretrained",
    "model_info",
    "register_model",
]
__version__ = "0.1.0"
