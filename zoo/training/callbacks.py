"""Trainer callbacks of the zoo: the training clock and budget, ``best.ckpt`` and ``last.ckpt``, the
test curve, the moving average of the weights.

Each keeps its state in the checkpoint, so a run resumed with ``ckpt_path=last`` continues its
clock, its budget and its time-to-accuracy curve where the interrupted piece stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint, WeightAveraging

from zoo.data.tta import tta_logits

log = logging.getLogger(__name__)


class TrainingClock(pl.Callback):
    """Training wall time and images seen, summed over every resumed piece of a run, and the
    record of those pieces (:meth:`run_pieces`: each one's command and steps, in results.json).

    With ``budget_s`` the run stops after the first step that reaches the budget (Li, Yumer &
    Ramanan, ICLR 2020); the validation of that last, partial epoch still runs.
    """

    def __init__(self, budget_s: float | None = None) -> None:
        self.budget_s = budget_s
        self.previous_s = 0.0  # time of the pieces before this one
        self.images = 0
        self.command = ""  # this piece's command line, set by the task that runs it
        self.pieces: list[dict[str, Any]] = []  # the earlier pieces, as the checkpoint kept them
        self._piece: dict[str, Any] | None = None  # this piece, once training started
        self._piece_start: float | None = None
        self._piece_from_s = 0.0  # the run's training time when this piece started
        self.now = time.perf_counter  # the time source (tests drive a simulated one)

    @property
    def state_key(self) -> str:
        return "TrainingClock"

    def elapsed(self) -> float:
        running = self.now() - self._piece_start if self._piece_start is not None else 0
        return self.previous_s + running

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent in the block does not count as training (e.g. the test curve's evaluation)."""
        start = self.now()
        try:
            yield
        finally:
            self.previous_s -= self.now() - start

    def progress(self) -> float:
        """Fraction of the budget spent (0 without a budget)."""
        return min(1.0, self.elapsed() / self.budget_s) if self.budget_s else 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        if self.pieces and self.pieces[-1].get("to_step") is None:  # an unrecorded earlier piece
            self.pieces[-1]["to_step"] = step
        self._piece_start, self._piece_from_s = self.now(), self.previous_s
        self._piece = {
            "command": self.command or None,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "threads": torch.get_num_threads(),
            "from_step": step,
            "to_step": step,
        }

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.previous_s, self._piece_start = self.elapsed(), None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.images += len(batch[1]) * trainer.world_size
        if self._piece is not None:
            self._piece["to_step"] = trainer.global_step
        if self.budget_s and self.elapsed() >= self.budget_s:
            trainer.should_stop = True

    def run_pieces(self) -> list[dict[str, Any]]:
        """Every piece of the run up to now: its command, start (UTC), threads, the optimizer
        steps it took (``from_step`` to ``to_step``) and its training seconds. A run resumed from a
        checkpoint that kept no pieces starts with one entry for all it did before, command None."""
        pieces = [dict(piece) for piece in self.pieces]
        if self._piece is not None:
            training_s = self.elapsed() - self._piece_from_s
            pieces.append({**self._piece, "training_s": round(training_s, 2)})
        return pieces

    def state_dict(self) -> dict[str, Any]:
        return {
            "elapsed_s": self.elapsed(),
            "images": self.images,
            "budget_s": self.budget_s,
            "pieces": self.run_pieces(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous_s = float(state_dict.get("elapsed_s", 0.0))
        self.images = int(state_dict.get("images", 0))
        self.pieces = [dict(piece) for piece in state_dict.get("pieces", [])]
        if not self.pieces and self.previous_s > 0:  # written before the clock kept its pieces
            self.pieces = [
                {
                    "command": None,
                    "from_step": 0,
                    "to_step": None,
                    "training_s": round(self.previous_s, 2),
                }
            ]
        self._piece = None


def training_clock(trainer: pl.Trainer) -> TrainingClock | None:
    return next((c for c in trainer.callbacks if isinstance(c, TrainingClock)), None)


class LastCheckpoint(Checkpoint):
    """``last.ckpt`` after every training epoch (after its validation), improved or not, and —
    with ``every_min`` — every that many minutes inside an epoch, so a multi-hour epoch can be
    resumed where it was. Written atomically by the trainer's checkpoint IO.

    A run told to stop (SIGTERM; Lightning then ends it after the current batch) saves
    ``last.ckpt`` after that batch too when it falls inside an epoch (single process: in DDP the
    ranks stop together before the next batch and the previous ``last.ckpt`` is kept).
    ``saved_at`` is the (epoch, global step) of this process's latest save.
    """

    def __init__(self, dirpath: str | Path, every_min: float | None = None) -> None:
        if every_min is not None and every_min <= 0:
            raise ValueError(f"callbacks.checkpoint_every_min={every_min}: use minutes > 0 or null")
        self.path = Path(dirpath) / "last.ckpt"
        self.every_s = every_min * 60 if every_min else None
        self._last_save = time.perf_counter()
        self.saved_at: tuple[int, int] | None = None

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # a full checkpoint, to resume
        self._last_save = time.perf_counter()
        self.saved_at = (trainer.current_epoch, trainer.global_step)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_save = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        due = self.every_s and time.perf_counter() - self._last_save >= self.every_s
        stopping = trainer.received_sigterm and trainer.world_size == 1
        # Not after an epoch's last batch: a checkpoint there would skip the epoch's validation
        # on resume; the epoch-end save follows it.
        mid_epoch = batch_idx + 1 < trainer.num_training_batches
        if mid_epoch and (stopping or (due and not trainer.should_stop)):
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that survives a resume without its file: a run resumed from
    a ``last.ckpt`` copied to a fresh folder (``make save-progress``) no longer has the
    ``best.ckpt`` its state names, so the best is tracked again from the resumed epoch on, and the
    final test takes a checkpoint that exists instead of failing after the last epoch."""

    @property
    def state_key(self) -> str:
        # Lightning's own key, so checkpoints written with ModelCheckpoint resume into this one
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if self.best_model_path and not Path(self.best_model_path).is_file():
            log.warning(
                "the best checkpoint %s of the resumed run is gone: the best is tracked again "
                "from this epoch on",
                self.best_model_path,
            )
            self.best_model_path = ""
            self.best_model_score = None
            self.best_k_models = {}
            self.kth_best_model_path = ""
            self.kth_value = torch.tensor(float("-inf" if self.mode == "max" else "inf"))


class WeightEMA(WeightAveraging):
    """An exponential moving average of the weights and BatchNorm statistics, updated after every
    ``every_n_steps`` optimizer steps (Polyak & Juditsky 1992).

    Validation (so the choice of ``best.ckpt``), the test curve, the checkpoints' weights and the
    final test all use the average; a resumed run continues it (Lightning's ``WeightAveraging``
    keeps the raw weights beside it in the checkpoint). The decay warms up as
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, as timm's ``ModelEmaV3`` does, so the
    average of a short run does not remember its random start.
    """

    def __init__(self, decay: float = 0.999, every_n_steps: int = 1) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"callbacks.ema_decay={decay}: use a number in [0, 1), e.g. 0.999")
        if every_n_steps < 1:
            raise ValueError(f"ema every_n_steps={every_n_steps}: use a whole number >= 1")
        super().__init__(use_buffers=True, avg_fn=self._moving_average)
        self.decay = decay
        self.every_n_steps = every_n_steps

    def _moving_average(
        self, averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor
    ) -> torch.Tensor:
        n = float(num_averaged)
        decay = min(self.decay, (1 + n) / (10 + n))
        return averaged + (current - averaged) * (1 - decay)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx % self.every_n_steps == 0

    @contextmanager
    def averaged(self, pl_module: pl.LightningModule) -> Iterator[None]:
        """The average in ``pl_module`` inside the block, the raw weights back after it."""
        if self._average_model is None:  # not fitting
            yield
            return
        self._swap_models(pl_module)
        try:
            yield
        finally:
            self._swap_models(pl_module)


class TestCurve(pl.Callback):
    """Test top-1 after every training epoch, with the training clock's seconds at that point.

    For time-to-accuracy measurements (docs/performance.md): the test set is only observed, never
    used for model selection (``results.json`` still reports the best-validation checkpoint).
    The clock is paused while the test set is evaluated: the seconds are training time only
    (validation included), and a time budget is not spent on these observations.
    """

    def __init__(self, time_to: list[float] | None = None) -> None:
        self.time_to_percent = list(time_to or [])
        self.curve: list[dict[str, float]] = []

    @property
    def state_key(self) -> str:
        return "TestCurve"

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        clock = training_clock(trainer)
        with clock.paused() if clock else nullcontext():
            correct, total = self._evaluate(trainer, pl_module)
        self.curve.append(
            {
                "epoch": trainer.current_epoch + 1,
                "seconds": round(clock.elapsed(), 2) if clock else float("nan"),
                "test_acc1": correct / max(1, total),
            }
        )

    @staticmethod
    def _evaluate(trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[int, int]:
        """Correct test predictions of the model the run delivers: the weight average if there
        is one, with the test-time augmentation of the final test."""
        ema = next((c for c in trainer.callbacks if isinstance(c, WeightEMA)), None)
        with ema.averaged(pl_module) if ema else nullcontext():
            return TestCurve._count_correct(trainer, pl_module)

    @staticmethod
    def _count_correct(trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[int, int]:
        was_training = pl_module.training
        pl_module.eval()
        correct = total = 0
        precision = trainer.precision_plugin  # the trainer's dtype (e.g. precision=64)
        for x, y in trainer.datamodule.test_dataloader():
            with precision.forward_context():
                x = precision.convert_input(x.to(pl_module.device))
                logits = tta_logits(pl_module, x, getattr(pl_module, "tta", None))
            correct += int((logits.argmax(1).cpu() == y).sum())
            total += len(y)
        pl_module.train(was_training)
        return correct, total

    def time_to(self, accuracy: float) -> float | None:
        """Seconds until test top-1 first reached ``accuracy`` (a fraction), or None."""
        return next((p["seconds"] for p in self.curve if p["test_acc1"] >= accuracy), None)

    def results(self) -> dict[str, Any]:
        return {
            "test_curve": self.curve,
            "time_to_acc1": {f"{t:g}": self.time_to(t / 100) for t in self.time_to_percent},
        }

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.curve = list(state_dict.get("curve", []))
