"""Trainer callbacks of the zoo."""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch


class TestCurve(pl.Callback):
    """Test top-1 after every training epoch, with the seconds since ``start``.

    For time-to-accuracy measurements (docs/performance.md): the test set is only observed, never
    used for model selection (``results.json`` still reports the best-validation checkpoint).
    The time includes these evaluations, so it is an upper bound on the training time.
    """

    def __init__(self, start: float | None = None) -> None:
        self.start = time.perf_counter() if start is None else start
        self.curve: list[dict[str, float]] = []

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader = trainer.datamodule.test_dataloader()
        was_training = pl_module.training
        pl_module.eval()
        correct = total = 0
        for x, y in loader:
            logits = pl_module(x.to(pl_module.device))
            correct += int((logits.argmax(1).cpu() == y).sum())
            total += len(y)
        pl_module.train(was_training)
        self.curve.append(
            {
                "epoch": trainer.current_epoch + 1,
                "seconds": round(time.perf_counter() - self.start, 2),
                "test_acc1": correct / max(1, total),
            }
        )

    def time_to(self, accuracy: float) -> float | None:
        """Seconds until test top-1 first reached ``accuracy`` (a fraction), or None."""
        return next((p["seconds"] for p in self.curve if p["test_acc1"] >= accuracy), None)
