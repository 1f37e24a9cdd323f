"""Learning-rate schedules as functions of training progress, with a linear warm-up.

A schedule maps progress ``p`` in [0, 1] to a factor of the base learning rate. Progress is the
fraction of steps done (``trainer.max_epochs``) or, with a time budget (``train.budget_s``), the
fraction of the budget spent — Li, Yumer & Ramanan, "Budgeted Training: Rethinking Deep Neural
Network Training Under Resource Constraints", ICLR 2020, §3: the schedule runs over the budget and
ends at its final value when the budget does. ``conf/scheduler/*.yaml`` instantiate these.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Schedule:
    """``factor(progress)`` times a linear warm-up over the first ``warmup_epochs`` epochs."""

    factor: Callable[[float], float]
    warmup_epochs: float = 0.0

    def lr_lambda(
        self, progress: Callable[[int], float], steps_per_epoch: int
    ) -> Callable[[int], float]:
        """The ``LambdaLR`` multiplier at optimizer step ``step`` (``progress(step)`` in [0, 1])."""
        warmup_steps = self.warmup_epochs * steps_per_epoch

        def multiplier(step: int) -> float:
            warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
            return warm * self.factor(min(1.0, max(0.0, progress(step))))

        return multiplier

    def scheduler(
        self,
        optimizer: torch.optim.Optimizer,
        progress: Callable[[int], float],
        steps_per_epoch: int,
    ) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, self.lr_lambda(progress, steps_per_epoch)
        )


def constant(warmup_epochs: float = 0.0) -> Schedule:
    return Schedule(lambda p: 1.0, warmup_epochs)


def cosine(warmup_epochs: float = 0.0, min_lr_ratio: float = 0.0) -> Schedule:
    """Loshchilov & Hutter's cosine decay (no restarts) from 1 to ``min_lr_ratio``."""
    _check_ratio("min_lr_ratio", min_lr_ratio)
    return Schedule(
        lambda p: min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)),
        warmup_epochs,
    )


def linear(warmup_epochs: float = 0.0, min_lr_ratio: float = 0.0) -> Schedule:
    """Linear decay to ``min_lr_ratio`` at the end (Budgeted Training's best schedule)."""
    _check_ratio("min_lr_ratio", min_lr_ratio)
    return Schedule(lambda p: 1 - (1 - min_lr_ratio) * p, warmup_epochs)


def multistep(
    milestones: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
    max_epochs: int | None = None,
) -> Schedule:
    """Divide by ``1/gamma`` at each milestone: fractions of training (< 1) or epochs (>= 1)."""
    fractions = []
    for m in milestones:
        if m >= 1:
            if not max_epochs:
                raise ValueError(f"multistep milestone {m} is in epochs: needs trainer.max_epochs")
            m = m / max_epochs
        fractions.append(float(m))
    return Schedule(lambda p: gamma ** sum(p >= m for m in fractions), warmup_epochs)


def onecycle(pct_start: float = 0.25, div_factor: float = 25.0, final_div: float = 1e4) -> Schedule:
    """Smith & Topin's one-cycle learning rate (cosine up to the base LR, then down)."""
    _check_ratio("pct_start", pct_start)
    start, end = 1 / div_factor, 1 / (div_factor * final_div)

    def factor(p: float) -> float:
        if p < pct_start:
            return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * p / pct_start))
        t = (p - pct_start) / max(1e-12, 1 - pct_start)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))

    return Schedule(factor)


def _check_ratio(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"scheduler.{name}={value}: use a value in [0, 1]")
