"""Model mode contexts shared by the attacks (used in training) and the analysis tools."""

from __future__ import annotations

from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module):
    """``model`` in eval mode (BatchNorm running statistics, no dropout); its mode restored."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
