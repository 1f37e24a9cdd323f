"""The first debugging test of Goodfellow, Bengio & Courville (2016, §11.5, "Fit a tiny dataset"):
a model and a training loop that work can drive the training loss on a few fixed batches to
nearly zero, with nothing that keeps it from memorising them.

``python train.py debug=overfit`` (conf/debug/overfit.yaml) trains with Lightning's
``overfit_batches`` on the same few images every epoch, augmentation, weight decay, label smoothing
and dropout off; :class:`OverfitCheck` prints whether the training loss fell below
``loss_below`` with 100 % training accuracy, and writes ``overfit.json`` in the run directory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from zoo.errors import UserError
from zoo.io import atomic_write_json
from zoo.models.registry import DROPOUT_OPTIONS, check_builder_value, get_model_entry

log = logging.getLogger(__name__)


def set_dropout(model_name: str, kwargs: dict[str, Any], rate: float | None) -> dict[str, Any]:
    """``kwargs`` with every dropout option the model's builder accepts set to ``rate`` (None:
    unchanged). Models without such an option are returned as they are."""
    if rate is None:
        return kwargs
    try:
        rate = check_builder_value("train.dropout", "dropout", rate)
    except ValueError as err:
        raise UserError(str(err)) from None
    accepted = get_model_entry(model_name).accepted_kwargs
    return {**kwargs, **{k: float(rate) for k in DROPOUT_OPTIONS if k in accepted}}


class OverfitCheck(pl.Callback):
    """PASS when the training loss of an epoch falls below ``loss_below`` with every training
    image classified correctly (top-1 100 %, measured in training mode as optimised); FAIL when
    training ends without it. ``stop_on_pass`` ends training at the first passing epoch."""

    def __init__(
        self, output_dir: str | Path, loss_below: float = 0.01, stop_on_pass: bool = True
    ) -> None:
        self.output_dir = Path(output_dir)
        self.loss_below = float(loss_below)
        self.stop_on_pass = stop_on_pass
        self.history: list[dict[str, float]] = []
        self.passed_epoch: int | None = None
        self.images = self.batches = 0

    @property
    def state_key(self) -> str:
        return "OverfitCheck"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not trainer.overfit_batches:
            raise UserError("debug=overfit needs trainer.overfit_batches=N (a few batches)")
        dm = trainer.datamodule
        batches = len(dm.train_dataloader())
        if not isinstance(trainer.overfit_batches, int):
            raise UserError(
                f"debug=overfit needs a number of batches, not a fraction "
                f"(trainer.overfit_batches={trainer.overfit_batches})"
            )
        if batches > trainer.overfit_batches:
            # Our loaders shuffle every epoch: the first N batches of a larger set would change.
            raise UserError(
                f"debug=overfit: the training set has {batches} batches but "
                f"trainer.overfit_batches={trainer.overfit_batches}, so the batches would not "
                f"be fixed; set data.train_subset={trainer.overfit_batches * dm.batch_size} "
                f"(overfit_batches x data.batch_size)"
            )
        self.batches = min(batches, int(trainer.overfit_batches)) if batches else 0
        self.images = len(dm.train_y)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Read before the module resets its epoch metrics (callbacks run first).
        loss = float(pl_module.train_loss.compute())
        acc1 = float(pl_module.train_acc1.compute())
        self.history.append({"epoch": trainer.current_epoch + 1, "loss": loss, "acc1": acc1})
        if self.passed_epoch is None and loss < self.loss_below and acc1 == 1.0:
            self.passed_epoch = trainer.current_epoch + 1
            if self.stop_on_pass:
                trainer.should_stop = True

    def verdict(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {"epoch": 0, "loss": float("nan"), "acc1": 0}
        best = min((h["loss"] for h in self.history), default=float("nan"))
        return {
            "passed": self.passed_epoch is not None,
            "epochs": last["epoch"],
            "passed_epoch": self.passed_epoch,
            "final_loss": last["loss"],
            "best_loss": best,
            "final_acc1": last["acc1"],
            "loss_below": self.loss_below,
            "batches": self.batches,
            "images": self.images,
            "history": self.history,
        }

    def message(self) -> str:
        v = self.verdict()
        where = f"{v['batches']} fixed batches ({v['images']} images)"
        if v["passed"]:
            return (
                f"overfit PASS: training loss {v['final_loss']:.4f} < {v['loss_below']:g} and "
                f"train top-1 {100 * v['final_acc1']:.2f} % on {where} after {v['epochs']} epochs"
            )
        return (
            f"overfit FAIL: after {v['epochs']} epochs on {where} the training loss is "
            f"{v['final_loss']:.4f} (best {v['best_loss']:.4f}; needs < {v['loss_below']:g}) and "
            f"train top-1 {100 * v['final_acc1']:.2f} % (needs 100 %): the model or the training "
            "loop cannot learn (a broken forward or backward, a detached graph, labels that do not "
            "match the images, a learning rate far off)"
        )

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        atomic_write_json(self.output_dir / "overfit.json", self.verdict())
        print(self.message(), flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "passed_epoch": self.passed_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.passed_epoch = state_dict.get("passed_epoch")
