"""The API every zoo model shares (timm's): features, head, classifier access and reset, and
feature extraction (``feature_info``, ``forward_intermediates``, ``FeatureNet``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import torch
from torch import nn


class ZooModel(nn.Module):
    """Mixin base: subclasses implement the methods below; ``forward`` chains the first two.

    - ``forward_features(x)``: the last feature map before pooling.
    - ``forward_head(x, pre_logits=False)``: pool/flatten (+ dropout) and the classifier;
      ``pre_logits=True`` returns the vector the classifier reads.
    - ``get_classifier()``: the final layer module.
    - ``reset_classifier(num_classes)``: a fresh final layer for ``num_classes`` outputs
      (``0`` makes it an identity, returning pre-logits).
    - ``feature_info``: one dict per feature map ``forward_intermediates`` can return, in forward
      order: ``num_chs``, ``reduction`` (the total stride) and ``module`` (where it is computed).
    - ``forward_intermediates(x, indices, stop_early, intermediates_only)``: those feature maps.
    """

    num_classes: int
    num_features: int
    feature_info: list[dict[str, Any]]
    classifier_name = "fc"  # the attribute holding the final layer, for the defaults below
    head_modules: tuple[str, ...] = ("fc",)  # only used by forward_head (dropped for features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        stop_early: bool = False,
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature maps at ``indices`` of ``feature_info`` (timm's semantics: ``None`` all,
        an int the last n, a sequence those; negative indices count from the end) and, unless
        ``intermediates_only``, ``forward_features``' output first. ``stop_early`` stops the
        forward at the last feature asked for, which then stands for that output."""
        take = feature_take_indices(len(self.feature_info), indices)
        intermediates: list[torch.Tensor] = []
        for i, feature in enumerate(self.iter_features(x)):
            if i == len(self.feature_info):
                return feature, intermediates
            if i in take:
                intermediates.append(feature)
            if i == take[-1] and (stop_early or intermediates_only):
                return intermediates if intermediates_only else (feature, intermediates)
        raise RuntimeError(f"{type(self).__name__}.iter_features yielded too few maps")

    def iter_features(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Every ``feature_info`` map in forward order, then ``forward_features``' output; the
        forward stops where the caller stops iterating."""
        raise NotImplementedError

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] | None = None, prune_head: bool = True
    ) -> list[int]:
        """timm's name: drop the head (and GoogLeNet's auxiliary heads) for feature extraction;
        returns the absolute feature indices ``indices`` selects."""
        take = feature_take_indices(len(self.feature_info), indices)
        if prune_head:
            self.reset_classifier(0)
            for name in self.head_modules:
                setattr(self, name, nn.Identity())
        return take

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        setattr(self, self.classifier_name, make_linear_head(self.num_features, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def main_output(out: torch.Tensor | tuple) -> torch.Tensor:
    """The main logits of a forward pass: GoogLeNet in training returns (main, aux2, aux1)."""
    return out[0] if isinstance(out, tuple) else out


def make_linear_head(in_features: int, num_classes: int) -> nn.Module:
    """A Linear classifier, or ``Identity`` for ``num_classes == 0`` (timm's convention)."""
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()


def feature_take_indices(num_features: int, indices: int | Sequence[int] | None) -> list[int]:
    """Absolute, sorted feature indices: ``None`` all, an int ``n`` the last n, a sequence those
    (negative from the end); ``ValueError`` for an index out of range (timm's helper)."""
    if indices is None:
        return list(range(num_features))
    if isinstance(indices, int):
        if not 0 < indices <= num_features:  # an empty selection would return nothing
            raise ValueError(f"indices={indices}: ask for 1 to {num_features} last features")
        return list(range(num_features - indices, num_features))
    take = []
    for i in indices:
        if not -num_features <= i < num_features:
            raise ValueError(
                f"feature index {i} out of range: this model has {num_features} features "
                f"(0..{num_features - 1}, or -{num_features}..-1 from the end)"
            )
        take.append(i % num_features)
    if not take:
        raise ValueError("out_indices/indices is empty: ask for at least one feature")
    return sorted(set(take))


def stack_feature_info(layers: nn.Sequential, prefix: str) -> list[dict[str, Any]]:
    """``feature_info`` of a plain conv stack (LeNet, AlexNet, VGG): the activation before each
    pooling layer and the last pooling layer's output, with their channels and total stride."""
    info: list[dict[str, Any]] = []
    channels, reduction = 0, 1
    children = list(layers.named_children())
    for i, (name, module) in enumerate(children):
        if isinstance(module, nn.Conv2d):
            channels = module.out_channels
        stride = getattr(module, "stride", 1)
        reduction *= stride[0] if isinstance(stride, tuple) else stride
        pooled_next = i + 1 < len(children) and isinstance(children[i + 1][1], _POOLS)
        if pooled_next or (i == len(children) - 1 and isinstance(module, _POOLS)):
            info.append({"num_chs": channels, "reduction": reduction, "module": f"{prefix}.{name}"})
    return info


_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def iter_stack(
    layers: nn.Sequential, x: torch.Tensor, taps: set[str], prefix: str
) -> Generator[torch.Tensor, None, torch.Tensor]:
    """Run ``layers``, yielding the outputs of the children named in ``taps``; returns the last."""
    for name, module in layers.named_children():
        x = module(x)
        if f"{prefix}.{name}" in taps:
            yield x
    return x


def feature_modules(feature_info: list[dict[str, Any]]) -> set[str]:
    return {d["module"] for d in feature_info}


class FeatureInfo:
    """The ``feature_info`` of the selected features (timm's class and accessors)."""

    def __init__(self, feature_info: list[dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = [dict(feature_info[i], index=i) for i in out_indices]
        self.out_indices = tuple(out_indices)

    def get_dicts(self) -> list[dict[str, Any]]:
        return [dict(d) for d in self.info]

    def get(self, key: str, idx: int | None = None) -> Any:
        return [d[key] for d in self.info] if idx is None else self.info[idx][key]

    def channels(self, idx: int | None = None) -> list[int] | int:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | None = None) -> list[int] | int:
        return self.get("reduction", idx)

    def module_name(self, idx: int | None = None) -> list[str] | str:
        return self.get("module", idx)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.info[idx]

    def __len__(self) -> int:
        return len(self.info)


class FeatureNet(nn.Module):
    """``create_model(name, features_only=True, out_indices=...)``: the model without its head,
    whose forward returns the list of selected feature maps (timm's ``FeatureGetterNet``)."""

    def __init__(self, model: ZooModel, out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self.out_indices = model.prune_intermediate_layers(out_indices, prune_head=True)
        self.model = model
        self.feature_info = FeatureInfo(model.feature_info, self.out_indices)
        cfg = getattr(model, "default_cfg", None)
        if cfg is not None:  # the record, with this wrapper's state-dict names
            self.default_cfg = dataclasses.replace(
                cfg, first_conv=f"model.{cfg.first_conv}", classifier=()
            )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(
            x, indices=self.out_indices, stop_early=True, intermediates_only=True
        )
