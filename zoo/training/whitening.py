"""Patch-whitening initialisation of a model's first convolution (Jordan, *94% on CIFAR-10 in 3.29
Seconds on a Single GPU*, arXiv:2404.00498, Sec. 3.2; Coates & Ng 2011): its filters become the
eigenvectors of the covariance of the training images' patches, each scaled by
1/sqrt(eigenvalue + eps) and paired with its negative, and stay frozen during training
(``callbacks.whiten=true``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import UserError

log = logging.getLogger(__name__)


def patch_whitening_filters(
    images: torch.Tensor, kernel_size: tuple[int, int], num_filters: int, eps: float = 5e-4
) -> torch.Tensor:
    """``num_filters`` filters of ``kernel_size`` for ``images`` (N, C, H, W): the eigenvectors of
    the patch covariance with the largest eigenvalues (``num_filters // 2`` of them, at most
    C·kh·kw), scaled to unit output variance, followed by their negatives. With 2·C·kh·kw filters
    and ``eps=0`` the first half turns the patches into ones with identity covariance."""
    kh, kw = kernel_size
    dims = images.shape[1] * kh * kw
    keep = min(num_filters // 2, dims)
    if keep < 1:
        raise ValueError(f"patch whitening needs at least 2 filters, got {num_filters}")
    patches = F.unfold(images.double(), (kh, kw)).transpose(1, 2).reshape(-1, dims)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    values, vectors = eigenvalues[-keep:].flip(0), eigenvectors[:, -keep:].flip(1)
    filters = (vectors / torch.sqrt(values.clamp_min(0) + eps)).T.reshape(keep, -1, kh, kw)
    return torch.cat([filters, -filters]).to(images.dtype)


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The convolution named by the model's ``pretrained_cfg["first_conv"]``."""
    name = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    if isinstance(name, list | tuple):
        name = name[0] if name else None
    conv = model.get_submodule(name) if name else None
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise UserError(
            f"callbacks.whiten: {type(model).__name__} names no plain first convolution "
            f"(pretrained_cfg first_conv={name!r}); train it with callbacks.whiten=false"
        )
    return conv


@torch.no_grad()
def whiten_first_conv(
    model: nn.Module, images: torch.Tensor, eps: float = 5e-4, freeze: bool = True
) -> nn.Conv2d:
    """Set the leading filters of the model's first convolution to the patch-whitening filters of
    ``images`` (the rest keep their initialisation when the layer has more than 2·C·kh·kw) and
    zero its bias; with ``freeze`` its weight is no longer trained."""
    conv = first_conv(model)
    filters = patch_whitening_filters(images, conv.kernel_size, conv.out_channels, eps)
    conv.weight[: len(filters)].copy_(filters.to(conv.weight))
    if conv.bias is not None:
        conv.bias.zero_()
    conv.weight.requires_grad_(not freeze)
    return conv


def _first_images(batches: Iterable, num_images: int) -> torch.Tensor:
    taken, count = [], 0
    for x, _ in batches:
        taken.append(x[: num_images - count])
        count += len(taken[-1])
        if count >= num_images:
            break
    return torch.cat(taken)


class InputWhitening(pl.Callback):
    """``callbacks.whiten=true``: before training, the model's first convolution is initialised
    with the patch-whitening filters of ``num_images`` training images (no augmentation) and frozen.
    Runs before the moving average of the weights copies the model; a resumed run's filters come
    from its checkpoint, which is restored afterwards."""

    def __init__(self, num_images: int = 5000, eps: float = 5e-4, freeze: bool = True) -> None:
        if num_images < 1:
            raise UserError(f"callbacks.whiten_images={num_images}: use a positive number")
        self.num_images, self.eps, self.freeze = num_images, eps, freeze

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        images = _first_images(trainer.datamodule.calibration_dataloader(), self.num_images)
        images = trainer.precision_plugin.convert_input(images).to(pl_module.device)
        conv = whiten_first_conv(pl_module.model, images, self.eps, self.freeze)
        log.info("first convolution whitened on %d training images (%s)", len(images), conv)
