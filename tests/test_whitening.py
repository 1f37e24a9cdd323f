"""Patch whitening of the first convolution: identity covariance of the whitened patches, the
truncated filter bank of a narrow layer, and ``callbacks.whiten=true`` in a training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import SYNTHETIC_TINY, run_train
from torch import nn

from zoo.data import SyntheticDataModule
from zoo.errors import UserError
from zoo.training.whitening import first_conv, patch_whitening_filters, whiten_first_conv
from zoo.weights.checkpoint import read_checkpoint


def _correlated_images(n: int = 64) -> torch.Tensor:
    """Images whose neighbouring pixels and channels are strongly correlated."""
    noise = torch.randn(n, 2, 12, 12, dtype=torch.float64)
    smooth = F.avg_pool2d(noise, 3, stride=1, padding=1)
    return torch.stack([smooth[:, 0], 0.5 * smooth[:, 0] + 0.1 * smooth[:, 1]], dim=1)


def _output_covariance(images: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    out = F.conv2d(images, filters).transpose(0, 1).reshape(len(filters), -1)
    return out @ out.T / out.shape[1]


def test_full_filter_bank_whitens_the_patches() -> None:
    images = _correlated_images()
    filters = patch_whitening_filters(images, (3, 3), num_filters=36, eps=0.0)
    assert filters.shape == (36, 2, 3, 3)
    torch.testing.assert_close(filters[18:], -filters[:18])
    covariance = _output_covariance(images, filters[:18])
    torch.testing.assert_close(covariance, torch.eye(18, dtype=covariance.dtype), atol=1e-6, rtol=0)
    raw = _output_covariance(images, torch.eye(18, dtype=images.dtype).reshape(18, 2, 3, 3))
    off_diagonal = (raw - torch.diag(raw.diagonal())).abs().max()
    assert off_diagonal > 0.5 * raw.diagonal().max()  # the input was far from white


def test_narrow_layer_keeps_the_directions_of_largest_variance() -> None:
    images = _correlated_images()
    filters = patch_whitening_filters(images, (3, 3), num_filters=8, eps=1e-3)
    patches = F.unfold(images, 3).transpose(1, 2).reshape(-1, 18)
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / len(patches)).flip(0)[:4]
    variances = _output_covariance(images, filters[:4]).diagonal()
    torch.testing.assert_close(variances, eigenvalues / (eigenvalues + 1e-3))


def test_whiten_first_conv_sets_freezes_and_leaves_the_rest() -> None:
    model = nn.Sequential(nn.Conv2d(1, 20, 3, padding=1), nn.BatchNorm2d(20))
    model.pretrained_cfg = {"first_conv": "0"}
    before = model[0].weight.detach().clone()
    images = torch.randn(16, 1, 10, 10)
    conv = whiten_first_conv(model, images)
    expected = patch_whitening_filters(images, (3, 3), 20)
    assert conv is model[0] and len(expected) == 18 and not conv.weight.requires_grad
    torch.testing.assert_close(conv.weight[:18], expected)
    torch.testing.assert_close(conv.weight[18:], before[18:])
    assert torch.equal(conv.bias, torch.zeros(20)) and model[1].weight.requires_grad


def test_model_without_a_plain_first_conv_is_refused() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(UserError, match="no plain first convolution"):
        first_conv(model)
    model.pretrained_cfg = {"first_conv": "0"}
    with pytest.raises(UserError, match="callbacks.whiten=false"):
        first_conv(model)


def test_training_with_whitening_keeps_the_whitened_filters(tmp_path: Path) -> None:
    results = run_train(
        tmp_path / "run",
        [
            "model=resnet20",
            "trainer.max_epochs=1",
            *SYNTHETIC_TINY,
            "data.image_size=16",
            "callbacks.whiten=true",
            "callbacks.whiten_images=40",
            "callbacks.ema=true",
        ],
    )
    dm = SyntheticDataModule(num_samples=96, num_test=32, val_size=32, batch_size=16, image_size=16)
    dm.setup()
    images = torch.cat([x for x, _ in dm.calibration_dataloader()])[:40]
    expected = patch_whitening_filters(images, (3, 3), 16)
    stored, _ = read_checkpoint(Path(results["best_checkpoint"]))
    torch.testing.assert_close(stored["conv1.weight"], expected)  # frozen, and averaged as frozen
