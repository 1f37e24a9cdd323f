"""Test-time augmentation: a classifier's logits averaged over flipped and shifted views.

``flip`` averages the image and its horizontal flip; ``flip_shift`` adds the views shifted by one
pixel up-left and down-right (zero padding, as the training crop pads), each with its flip: six
views, the flip-and-translate evaluation of Jordan's CIFAR-10 speedruns (arXiv:2404.00498).
Only for models trained with horizontal flips and crops: a view the model never saw in training
costs accuracy instead of adding it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import UserError

TTA_MODES = ("flip", "flip_shift")


def check_tta(mode: str | None) -> str | None:
    """``mode`` if it names a test-time augmentation (None or false: none)."""
    if mode in (None, False):
        return None
    if mode not in TTA_MODES:
        raise UserError(
            f"tta={mode!r} is not a test-time augmentation: use null, flip or flip_shift"
        )
    return mode


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved by (dy, dx) pixels, zeros where it comes in."""
    p = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = F.pad(x, (p, p, p, p))
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a batch ``x`` (N, C, H, W) that ``mode`` averages over."""
    bases = [x] if mode == "flip" else [x, shift(x, -1, -1), shift(x, 1, 1)]
    return [view for base in bases for view in (base, base.flip(-1))]


def tta_logits(model: nn.Module, x: torch.Tensor, mode: str | None) -> torch.Tensor:
    """The mean of ``model``'s logits over the views of ``mode`` (None: ``model(x)``)."""
    if mode is None:
        return model(x)
    views = tta_views(x, mode)
    logits = model(torch.cat(views))
    return logits.view(len(views), len(x), *logits.shape[1:]).mean(0)
