"""``create_model``, ``list_models``, ``model_info``: the zoo's public model API.

This module sits above the registry, the model families and the weights: importing it registers
every family (``zoo.models``), and ``create_model`` builds through the registry, then loads weights.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

from torch import nn

import zoo.models  # noqa: F401  (registers every family)
from zoo.models.base import FeatureNet
from zoo.models.registry import build_model, get_model_entry, model_names, num_params
from zoo.weights.pretrained import describe_weights, get_tag, list_tags, load_pretrained

__all__ = ["create_model", "list_models", "list_pretrained", "model_info"]


def _patterns(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def list_models(
    filter: str | Sequence[str] = "",
    module: str | Sequence[str] = "",
    pretrained: bool = False,
    exclude_filters: str | Sequence[str] = "",
    include_tags: bool | None = None,
) -> list[str]:
    """Registered names, sorted, as timm's ``list_models``.

    ``filter``: fnmatch pattern(s) a name must match (any; ``""`` all); ``module``: the family
    file(s) (``"resnet"`` is ``zoo/models/resnet.py``, its no-shortcut twins included);
    ``pretrained=True``: only models with weights; ``exclude_filters``: patterns to leave out;
    ``include_tags`` (default: ``pretrained``): one ``name.tag`` entry per set of weights, which
    the filters then match (``create_model("resnet18.tv_in1k", pretrained=True)`` loads it).
    """
    include_tags = pretrained if include_tags is None else include_tags
    modules = {m for m in _patterns(module) if m}
    names = [
        n
        for n in model_names()
        if not modules or get_model_entry(n).builder.__module__.rsplit(".", 1)[-1] in modules
    ]
    if pretrained:
        names = [n for n in names if list_tags(n)]
    if include_tags:
        names = [f"{n}.{tag}" for n in names for tag in list_tags(n)] if pretrained else names
    keep = [p for p in _patterns(filter) if p]
    drop = [p for p in _patterns(exclude_filters) if p]
    return sorted(
        n
        for n in names
        if (not keep or any(fnmatch.fnmatchcase(n, p) for p in keep))
        and not any(fnmatch.fnmatchcase(n, p) for p in drop)
    )


def list_pretrained(
    filter: str | Sequence[str] = "", exclude_filters: str | Sequence[str] = ""
) -> list[str]:
    """Every set of weights as ``name.tag`` (timm's ``list_pretrained``), e.g.
    ``zoo.list_pretrained("*fmnist")``."""
    return list_models(filter, pretrained=True, exclude_filters=exclude_filters)


def create_model(
    name: str,
    *,
    pretrained: bool | str = False,
    num_classes: int | None = None,
    in_chans: int | None = None,
    global_pool: str | None = None,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    ``name`` may carry a pretrained tag, timm style (``"resnet18.tv_in1k"``): it is then the
    weights ``pretrained=True`` loads, and the model's ``pretrained_cfg`` describes them.
    ``num_classes``/``in_chans`` default to the builder's own defaults. ``pretrained`` is
    ``False``, ``True`` (the model's default tag), a tag name, a local path or a URL; the weights
    are adapted to ``in_chans``/``num_classes`` when those differ from the checkpoint.

    ``global_pool`` sets the pooling in front of the head (``"avg"``, ``"max"``, ``"avgmax"``,
    ``"catavgmax"``; ``""`` with ``num_classes=0``: ``forward`` returns the unpooled map), as
    ``model.reset_classifier(num_classes, global_pool)`` does; models whose head reads a
    flattened map (LeNet-5, AlexNet, the ImageNet VGGs) or every block's pooled features
    (CliqueNet, no ``""``) refuse what they cannot do, naming the alternative.

    ``features_only=True`` returns a ``FeatureNet``: the model without its head, whose forward
    gives the feature maps of ``model.feature_info`` at ``out_indices`` (all by default; an int
    takes the last n, negative indices count from the end), described by its ``feature_info``.
    """
    if out_indices is not None and not features_only:
        raise TypeError(f"{name}(): out_indices selects features: pass features_only=True too")
    name, _, tag = name.partition(".")
    if tag:
        get_tag(name, tag)  # an unknown tag is an error before anything is built
        pretrained = tag if pretrained is True else pretrained
    model = build_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    pool = getattr(model, "global_pool", None)
    if global_pool is not None and global_pool != getattr(pool, "pool_type", None):
        model.reset_classifier(model.num_classes, global_pool)
    if pretrained:
        load_pretrained(model, name, pretrained)
    elif tag:
        describe_weights(model, name, tag)
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
        "data": cfg.data,
        "first_conv": cfg.first_conv,
        "classifier": cfg.classifier,
        "torchvision": cfg.torchvision,
        "timm": cfg.timm,
        "reference": cfg.reference,
        "paper_numbers": cfg.paper_numbers.as_dict() if cfg.paper_numbers else {},
    }
