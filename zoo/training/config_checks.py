"""Value checks of a composed training config, before any work starts.

Hydra checks that keys exist; these check that values make sense (``trainer.max_epochs=abc``,
``data.batch_size=0``, ``threads=-1``, a negative learning rate, an unknown precision), so a
mistake costs one line instead of a traceback after the data set was loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from zoo.errors import UserError
from zoo.runtime import ALLOCATOR_POLICIES

PRECISIONS = (
    "64", "64-true", "32", "32-true", "16", "16-mixed", "16-true",
    "bf16", "bf16-mixed", "bf16-true", "transformer-engine", "transformer-engine-float16",
)  # fmt: skip


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def whole(minimum: int) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and v >= minimum


def number(minimum: float, *, strict: bool = False, maximum: float | None = None):
    def ok(v: Any) -> bool:
        if not _is_number(v) or v != v:
            return False
        above = v > minimum if strict else v >= minimum
        return above and (maximum is None or v <= maximum)

    return ok


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def batch_limit(v: Any) -> bool:
    """Lightning's ``limit_*_batches``: a count >= 0 or a fraction in [0, 1]."""
    return v is None or (_is_int(v) and v >= 0) or (_is_number(v) and 0.0 <= v <= 1.0)


# key: (check, what a valid value looks like)
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (whole(0), "a whole number >= 0"),
    "threads": (optional(whole(1)), "a whole number >= 1, or null for the default"),
    "allocator": (lambda v: v in ALLOCATOR_POLICIES, " or ".join(ALLOCATOR_POLICIES)),
    "overwrite": (lambda v: isinstance(v, bool), "true or false"),
    "trainer.max_epochs": (lambda v: _is_int(v) and (v >= 1 or v == -1), "a whole number >= 1"),
    "trainer.precision": (lambda v: str(v) in PRECISIONS, "one of " + ", ".join(PRECISIONS)),
    "trainer.limit_train_batches": (batch_limit, "a count >= 0 or a fraction in [0, 1]"),
    "trainer.limit_val_batches": (batch_limit, "a count >= 0 or a fraction in [0, 1]"),
    "trainer.limit_test_batches": (batch_limit, "a count >= 0 or a fraction in [0, 1]"),
    "trainer.gradient_clip_val": (optional(number(0, strict=True)), "a number > 0, or null"),
    "trainer.log_every_n_steps": (whole(1), "a whole number >= 1"),
    "trainer.check_val_every_n_epoch": (optional(whole(1)), "a whole number >= 1"),
    "data.batch_size": (whole(1), "a whole number >= 1"),
    "data.eval_batch_size": (whole(1), "a whole number >= 1"),
    "data.train_subset": (optional(whole(1)), "a whole number >= 1, or null"),
    "optim.lr": (number(0, strict=True), "a number > 0"),
    "optim.weight_decay": (number(0), "a number >= 0"),
    "optim.momentum": (number(0, maximum=1), "a number in [0, 1]"),
    "scheduler.warmup_epochs": (number(0), "a number of epochs >= 0"),
    "train.label_smoothing": (number(0, maximum=0.999), "a number in [0, 1)"),
    "train.budget_s": (optional(number(0, strict=True)), "seconds > 0, or null"),
    "callbacks.checkpoint_every_min": (
        optional(number(0, strict=True)),
        "minutes > 0, or null to save only at epoch ends",
    ),
}


def check_train_config(cfg: DictConfig) -> None:
    """Raise a one-line UserError for the first value out of its range."""
    for key, (ok, expected) in CHECKS.items():
        if OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
            continue
        value = OmegaConf.select(cfg, key)
        if not ok(value):
            raise UserError(f"{key}={value!r} is not valid: use {expected}")
