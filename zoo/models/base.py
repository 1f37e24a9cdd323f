"""The API every zoo model shares (timm's): features, head, classifier access and reset."""

from __future__ import annotations

import torch
from torch import nn


class ZooModel(nn.Module):
    """Mixin base: subclasses implement the four methods; ``forward`` chains them.

    - ``forward_features(x)``: the last feature map before pooling.
    - ``forward_head(x, pre_logits=False)``: pool/flatten (+ dropout) and the classifier;
      ``pre_logits=True`` returns the vector the classifier reads.
    - ``get_classifier()``: the final layer module.
    - ``reset_classifier(num_classes)``: a fresh final layer for ``num_classes`` outputs
      (``0`` makes it an identity, returning pre-logits).
    """

    num_classes: int
    num_features: int
    classifier_name = "fc"  # the attribute holding the final layer, for the defaults below

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        setattr(self, self.classifier_name, make_linear_head(self.num_features, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def make_linear_head(in_features: int, num_classes: int) -> nn.Module:
    """A Linear classifier, or ``Identity`` for ``num_classes == 0`` (timm's convention)."""
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()
