"""Value checks of a composed training config, before any work starts.

Hydra checks that keys exist; these check that values make sense (``trainer.max_epochs=abc``,
``data.batch_size=0``, ``threads=-1``, a negative learning rate, an unknown precision), that no
mandatory value (``???``) was left out, and that keys added with ``+`` under ``trainer`` and
``train`` are ones the trainer reads, so a mistake costs one line instead of a traceback after the
data set was loaded (or a setting silently ignored).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from zoo.errors import UserError
from zoo.training.runtime import ALLOCATOR_POLICIES
from zoo.training.value_checks import (
    batch_limit,
    is_int,
    number,
    optional,
    probability,
    split_size,
    whole,
)

PRECISIONS = (
    "64", "64-true", "32", "32-true", "16", "16-mixed", "16-true",
    "bf16", "bf16-mixed", "bf16-true", "transformer-engine", "transformer-engine-float16",
)  # fmt: skip


# key: (check, what a valid value looks like)
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (whole(0), "a whole number >= 0"),
    "threads": (optional(whole(1)), "a whole number >= 1, or null for the default"),
    "allocator": (lambda v: v in ALLOCATOR_POLICIES, " or ".join(ALLOCATOR_POLICIES)),
    "overwrite": (lambda v: isinstance(v, bool), "true or false"),
    "trainer.max_epochs": (lambda v: is_int(v) and (v >= 1 or v == -1), "a whole number >= 1"),
    "trainer.max_steps": (lambda v: is_int(v) and (v >= 1 or v == -1), "a whole number >= 1"),
    "trainer.precision": (lambda v: str(v) in PRECISIONS, "one of " + ", ".join(PRECISIONS)),
    "trainer.limit_train_batches": (batch_limit, "a count >= 0 or a fraction in [0, 1]"),
    "trainer.limit_val_batches": (batch_limit, "a count >= 0 or a fraction in [0, 1]"),
    "trainer.limit_test_batches": (batch_limit, "a count >= 0 or a fraction in [0, 1]"),
    "trainer.gradient_clip_val": (optional(number(0, strict=True)), "a number > 0, or null"),
    "trainer.log_every_n_steps": (whole(1), "a whole number >= 1"),
    "trainer.check_val_every_n_epoch": (optional(whole(1)), "a whole number >= 1"),
    "trainer.accumulate_grad_batches": (whole(1), "a whole number >= 1"),
    "data.batch_size": (whole(1), "a whole number >= 1"),
    "data.eval_batch_size": (whole(1), "a whole number >= 1"),
    "data.train_subset": (optional(whole(1)), "a whole number >= 1, or null"),
    "data.val_size": (split_size, "a count >= 0 or a fraction in [0, 1)"),
    "data.crop_padding": (whole(0), "a whole number of pixels >= 0"),
    "data.random_erasing": (number(0, maximum=1), "a probability in [0, 1]"),
    "data.image_size": (whole(1), "a whole number of pixels >= 1"),
    "data.in_chans": (whole(1), "a whole number >= 1"),
    "data.num_classes": (whole(2), "a whole number >= 2"),
    "optim.lr": (number(0, strict=True), "a number > 0"),
    "optim.weight_decay": (number(0), "a number >= 0"),
    "optim.momentum": (number(0, maximum=1), "a number in [0, 1]"),
    "scheduler.warmup_epochs": (number(0), "a number of epochs >= 0"),
    "train.label_smoothing": (number(0, maximum=0.999), "a number in [0, 1)"),
    "train.budget_s": (optional(number(0, strict=True)), "seconds > 0, or null"),
    "train.dropout": (optional(probability), "a probability in [0, 1), or null"),
    "callbacks.checkpoint_every_min": (
        optional(number(0, strict=True)),
        "minutes > 0, or null to save only at epoch ends",
    ),
}


# The keys of conf/train.yaml's ``train`` node: the options the trainer reads.
TRAIN_KEYS = (
    "label_smoothing", "channels_last", "compile", "fast", "adversarial", "budget_s", "dropout",
    "distill", "tta",
)  # fmt: skip


def _missing(node: Any, prefix: str) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _missing(value, f"{prefix}{key}.")
    elif node == "???":
        yield prefix[:-1]


def check_no_missing_values(cfg: DictConfig) -> None:
    """A mandatory value (``???`` in a config file, e.g. ``data.root`` of ``data=imagefolder``)
    left out is a one-line UserError naming it."""
    plain = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    key = next(_missing(plain, ""), None)
    if key is not None:
        raise UserError(f"{key} has no value: give it on the command line ({key}=...)")


def check_keys(node: DictConfig | None, prefix: str, known: list[str], where: str) -> None:
    """A key added under ``prefix`` (``+trainer.x=1``) that nothing reads: a one-line UserError."""
    for key in node or {}:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=3, cutoff=0.6)
            hint = f"; did you mean: {', '.join(f'{prefix}.{k}' for k in close)}?" if close else ""
            raise UserError(f"unknown config key '{prefix}.{key}' ({where}){hint}")


TRAINER_ARGS = [p for p in inspect.signature(pl.Trainer.__init__).parameters if p != "self"]


def has_budget(cfg: DictConfig) -> bool:
    """Something other than the epoch count ends training: a time budget, a step count, a time."""
    max_steps = OmegaConf.select(cfg, "trainer.max_steps", default=-1)
    return bool(
        OmegaConf.select(cfg, "train.budget_s", default=None)
        or (is_int(max_steps) and max_steps > 0)
        or OmegaConf.select(cfg, "trainer.max_time", default=None)
    )


def check_train_config(cfg: DictConfig) -> None:
    """Raise a one-line UserError for a missing value, an unknown trainer/train key, or the first
    value out of its range."""
    check_no_missing_values(cfg)
    check_keys(
        cfg.get("trainer"), "trainer", TRAINER_ARGS, "not an argument of Lightning's Trainer"
    )
    check_keys(
        cfg.get("train"), "train", list(TRAIN_KEYS), "the train options: " + ", ".join(TRAIN_KEYS)
    )
    for key, (ok, expected) in CHECKS.items():
        if OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
            continue
        value = OmegaConf.select(cfg, key)
        if not ok(value):
            raise UserError(f"{key}={value!r} is not valid: use {expected}")
    if OmegaConf.select(cfg, "trainer.max_epochs", default=None) == -1 and not has_budget(cfg):
        raise UserError(
            "trainer.max_epochs=-1 trains forever: use a whole number >= 1, or end training "
            "otherwise (train.budget_s=SECONDS or trainer.max_steps=N)"
        )
