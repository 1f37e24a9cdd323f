"""BatchNorm recalibration: running statistics re-estimated with dropout off.

A network trained with dropout before BatchNorm layers stores running variances measured on
dropped-out activations; at inference, with dropout off, the variances those layers see are
smaller ("variance shift", Li, Chen, Hu & Yang, CVPR 2019, §3-4), and the shift compounds through
deep or recurrent (CliqueNet's Stage-II) paths. Re-estimating the statistics in one forward pass
with BatchNorm in training mode and every other module in eval mode removes it without touching a
weight (their §5.1 remedy). The pass itself is ``torch.optim.swa_utils.update_bn`` (a cumulative
average over the batches, as for SWA, Izmailov et al. 2018); this module only decides which
modules see training mode.
"""

from __future__ import annotations

import io
import itertools
import logging
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import update_bn

from zoo.io import atomic_write_bytes

log = logging.getLogger(__name__)


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers (1d/2d/3d, SyncBatchNorm) of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


class _OnlyBatchNormTrains(nn.Module):
    """``model`` as ``update_bn`` sees it: ``train()`` switches the BatchNorm layers only.

    Every other module stays in eval mode, so ``nn.Dropout`` modules and functional
    ``F.dropout(x, p, self.training)`` calls are identities during the pass.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> _OnlyBatchNormTrains:
        self.training = mode
        self.model.eval()
        for bn in batchnorm_layers(self.model):
            bn.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)


def _inputs(batches: Iterable[Any], num_batches: int | None) -> Iterator[torch.Tensor]:
    for batch in itertools.islice(batches, num_batches):
        yield batch[0] if isinstance(batch, (list, tuple)) else batch


def recalibrate_bn(
    model: nn.Module,
    batches: Iterable[Any],
    num_batches: int | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Replace every BatchNorm's running mean and variance by their average over ``batches``.

    ``batches`` yields input tensors or ``(input, target)`` pairs; ``num_batches`` takes the first
    N (None: all). BatchNorm layers run in training mode, every dropout is off. Each batch counts
    equally (the cumulative average of ``update_bn``). Returns ``model`` in eval mode, its
    parameters untouched; a model without BatchNorm is returned unchanged with a warning.
    """
    if num_batches is not None and num_batches < 1:
        raise ValueError(f"num_batches={num_batches} must be >= 1 (or None for every batch)")
    if not batchnorm_layers(model):
        warnings.warn(
            f"{type(model).__name__} has no BatchNorm layer with running statistics: "
            "nothing to recalibrate",
            stacklevel=2,
        )
        return model
    seen = 0

    def counted() -> Iterator[torch.Tensor]:
        nonlocal seen
        for x in _inputs(batches, num_batches):
            seen += 1
            yield x

    with torch.no_grad():
        update_bn(counted(), _OnlyBatchNormTrains(model), device=device)
    if seen == 0:
        raise ValueError("recalibrate_bn: batches yielded nothing; give at least one batch")
    return model.eval()


class RecalibrateBatchNorm(pl.Callback):
    """``callbacks.recalibrate_bn=true``: after fit, recalibrate the best checkpoint's BatchNorm
    statistics on ``num_images`` training images (no augmentation, dropout off) and write it back,
    so the final test, ``results.json`` and exported weights all use the recalibrated model.

    Validation top-1 before and after goes to ``results.json`` (``bn_recalibration``) and into the
    rewritten checkpoint.
    """

    def __init__(self, num_images: int | None = 10_000) -> None:
        if num_images is not None and num_images < 1:
            raise ValueError(f"recalibrate_bn: num_images={num_images} must be >= 1 or null (all)")
        self.num_images = num_images
        self.report: dict[str, Any] | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0 or not batchnorm_layers(pl_module):
            return
        path = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
        checkpoint = None
        if path:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            pl_module.load_state_dict(checkpoint["state_dict"])
        dm = trainer.datamodule
        device = pl_module.device

        def as_trained(batches: Iterable[Any]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for x, y in batches:  # in the trainer's dtype (e.g. float64 with precision=64)
                yield trainer.precision_plugin.convert_input(x), y

        before = accuracy(pl_module, as_trained(dm.val_dataloader()), device)
        loader = dm.calibration_dataloader()
        num_batches = None if self.num_images is None else -(-self.num_images // loader.batch_size)
        recalibrate_bn(pl_module, as_trained(loader), num_batches, device=device)
        after = accuracy(pl_module, as_trained(dm.val_dataloader()), device)
        used = min(len(loader), num_batches or len(loader))
        images = min(len(loader.labels), used * loader.batch_size)
        self.report = {"num_images": images, "val_acc1_before": before, "val_acc1_after": after}
        log.info(
            "BatchNorm recalibrated on %d training images: val top-1 %s -> %s",
            images,
            before,
            after,
        )
        if checkpoint is not None:
            checkpoint["state_dict"] = {
                k: v.detach().cpu() for k, v in pl_module.state_dict().items()
            }
            checkpoint["bn_recalibration"] = self.report
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            atomic_write_bytes(path, buffer.getvalue())

    def results(self) -> dict[str, Any]:
        return {"bn_recalibration": self.report} if self.report else {}


@torch.no_grad()
def accuracy(
    model: nn.Module, batches: Iterable[Any], device: torch.device | str | None = None
) -> float | None:
    """Top-1 of ``model`` (put in eval mode) over ``(input, target)`` batches; None if empty."""
    model.eval()
    correct = total = 0
    for x, y in batches:
        if device is not None:
            x, y = x.to(device), y.to(device)
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total if total else None
