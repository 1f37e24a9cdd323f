"""``create_model``, ``list_models``, ``model_info``: the zoo's public model API.

This module sits above the registry, the model families and the weights: importing it registers
every family (``zoo.models``), and ``create_model`` builds through the registry, then loads weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

import zoo.models  # noqa: F401  (registers every family)
from zoo.models.base import FeatureNet
from zoo.pretrained import list_tags, load_pretrained
from zoo.registry import build_model, get_model_entry, model_names, num_params

__all__ = ["create_model", "list_models", "model_info"]


def list_models(pattern: str = "*", *, pretrained: bool = False) -> list[str]:
    """Registered names matching the fnmatch ``pattern``, sorted.

    With ``pretrained=True`` only the models that have at least one pretrained tag are listed.
    """
    names = model_names(pattern)
    return [n for n in names if list_tags(n)] if pretrained else names


def create_model(
    name: str,
    *,
    pretrained: bool | str = False,
    num_classes: int | None = None,
    in_chans: int | None = None,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    ``num_classes``/``in_chans`` default to the builder's own defaults. ``pretrained`` is
    ``False``, ``True`` (the model's default tag), a tag name, a local path or a URL; the weights
    are adapted to ``in_chans``/``num_classes`` when those differ from the checkpoint.

    ``features_only=True`` returns a ``FeatureNet``: the model without its head, whose forward
    gives the feature maps of ``model.feature_info`` at ``out_indices`` (all by default; an int
    takes the last n, negative indices count from the end), described by its ``feature_info``.
    """
    if out_indices is not None and not features_only:
        raise TypeError(f"{name}(): out_indices selects features: pass features_only=True too")
    model = build_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if pretrained:
        load_pretrained(model, name, pretrained)
    return FeatureNet(model, out_indices) if features_only else model


def model_info(name: str) -> dict[str, Any]:
    """What the registry knows about ``name``: its record, parameter count and pretrained tags."""
    cfg = get_model_entry(name).cfg
    return {
        "name": name,
        "family": cfg.family,
        "paper": cfg.paper,
        "input_size": cfg.input_size,
        "min_input_size": cfg.min_input_size,
        "num_classes": cfg.num_classes,
        "num_params": num_params(name),
        "pretrained": list_tags(name),
        "mean": cfg.mean,
        "std": cfg.std,
        "first_conv": cfg.first_conv,
        "classifier": cfg.classifier,
        "torchvision": cfg.torchvision,
        "timm": cfg.timm,
        "reference": cfg.reference,
        "paper_numbers": cfg.paper_numbers.as_dict() if cfg.paper_numbers else {},
    }
