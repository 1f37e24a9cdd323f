"""The one LightningModule that trains every zoo model."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from zoo.analysis.attacks import ATTACKS, attack
from zoo.bench.complexity import count_macs
from zoo.data.tta import check_tta, tta_logits
from zoo.errors import UserError
from zoo.models.fast import optimize
from zoo.models.registry import check_builder_value, check_input_size
from zoo.training.callbacks import LastCheckpoint, TrainingClock
from zoo.training.debug import set_dropout
from zoo.training.distill import Teacher, check_distill, kd_loss, load_teacher
from zoo.training.instantiate import build
from zoo.training.value_checks import number, optional, whole
from zoo.weights.factory import create_model

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError):
    """The training loss or a validation metric became NaN or infinite."""


def kept_checkpoint(trainer: pl.Trainer) -> str:
    """What a run stopped now leaves to resume from, for its error message."""
    saved = [c.path for c in trainer.callbacks if isinstance(c, LastCheckpoint)]
    if saved and saved[0].is_file():
        return f"the last good checkpoint is kept ({saved[0]})"
    return "no checkpoint had been written yet"


def check_finite_validation(module: pl.LightningModule, metrics: dict[str, torch.Tensor]) -> None:
    """A NaN or infinite validation metric stops the run as a non-finite training loss does: the
    epoch is never checkpointed, so it can never be chosen as the best."""
    bad = {k: float(v) for k, v in metrics.items() if not torch.isfinite(torch.as_tensor(v)).all()}
    if bad:
        shown = ", ".join(f"{k} {v}" for k, v in bad.items())
        where = (
            "in the check before training"
            if module.trainer.sanity_checking
            else f"at epoch {module.current_epoch}, step {module.global_step}"
        )
        raise NonFiniteLossError(
            f"validation became non-finite ({shown}) {where}; lower the learning rate or clip "
            f"gradients (trainer.gradient_clip_val); {kept_checkpoint(module.trainer)}"
        )


def optimizer_factory(optim_cfg: dict[str, Any]) -> tuple[Any, bool]:
    """The optimizer of ``optim_cfg`` as a function of the parameter groups, and whether norms and
    biases are kept out of weight decay (``exclude_bn_bias``)."""
    cfg = dict(optim_cfg)
    exclude_bn_bias = bool(cfg.pop("exclude_bn_bias", False))
    return build(cfg, "optim"), exclude_bn_bias


def param_groups(model: nn.Module, weight_decay: float, exclude_bn_bias: bool) -> list[dict]:
    """Weight decay on every parameter, or (``exclude_bn_bias``) not on norms and biases."""
    if not exclude_bn_bias:
        return [
            {
                "params": [p for p in model.parameters() if p.requires_grad],
                "weight_decay": weight_decay,
            }
        ]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


# train.adversarial's values: (check, what a valid value looks like); pixel units.
ADVERSARIAL_CHECKS = {
    "eps": (number(0), "a number >= 0 (pixel units), e.g. eps=0.03"),
    "steps": (whole(1), "a whole number >= 1"),
    "step_size": (optional(number(0, strict=True)), "a number > 0 (pixel units), or null"),
}


DEFAULT_OPTIM = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "weight_decay": 5e-4}

# The keys of a model config (conf/model/*.yaml) that are not arguments of the model's builder.
RESERVED_MODEL_KEYS = ("name", "pretrained", "in_chans", "num_classes")


def builder_kwargs(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The builder arguments of a model config: every key but the reserved ones."""
    return {k: v for k, v in model_cfg.items() if k not in RESERVED_MODEL_KEYS}


def data_model_kwargs(model_cfg: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """The builder arguments of ``model_cfg`` for ``data`` (its ``describe()``): ``num_classes``
    and ``in_chans`` follow the data and, when given, are checked as ``create_model`` checks them
    and against the data."""
    kwargs = builder_kwargs(model_cfg)
    data_values = {
        "num_classes": (data["num_classes"], "classes"),
        "in_chans": (data["in_chans"], "channels"),
    }
    for key, (data_value, what) in data_values.items():
        value = model_cfg.get(key)
        if value is None:
            kwargs[key] = data_value
            continue
        try:
            kwargs[key] = check_builder_value(f"model.{key}", key, value, minimum=1)
        except ValueError as err:
            raise UserError(f"{err}; leave it unset to follow the data") from None
        if kwargs[key] != data_value:
            raise UserError(
                f"model.{key}={value} but the data has {data_value} {what}: leave model.{key} "
                "unset (null) to follow the data"
            )
    return kwargs


class ZooClassifier(pl.LightningModule):
    """Cross-entropy training of ``create_model(model_name, **model_kwargs)``.

    Hyper-parameters saved in every checkpoint: ``model_name``, ``model_kwargs`` and ``data``
    (dataset name, classes, channels, size, mean/std), enough to rebuild the model and its
    preprocessing from the checkpoint alone. With ``distill`` ({teacher, temperature, alpha}) the
    model learns from a frozen teacher too (:func:`zoo.training.distill.kd_loss`); the teacher is
    not part of the module's state_dict, so checkpoints and exported weights hold the student only.
    With ``tta`` (``flip`` or ``flip_shift``) the test averages the logits of augmented views
    (:mod:`zoo.data.tta`); validation, which picks the best checkpoint, sees the images alone.
    """

    def __init__(
        self,
        model_name: str,
        model_kwargs: dict[str, Any],
        data: dict[str, Any] | None = None,
        optim: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
        pretrained: bool | str = False,
        seed: int = 0,
        fast: bool = False,
        adversarial: dict[str, Any] | None = None,
        budget_s: float | None = None,
        distill: dict[str, Any] | None = None,
        tta: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(model_name, pretrained=pretrained, **model_kwargs)
        channels_last = channels_last or fast
        if fast:
            optimize(self.model)  # exact convolution rewrites + channels_last (zoo.models.fast)
        elif channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.adversarial = self._check_adversarial(adversarial)
        self.distill = check_distill(distill)
        self.tta = check_tta(tta)  # test-time augmentation of the test (zoo.data.tta)
        teacher = load_teacher(self.distill["teacher"], data or {}) if self.distill else None
        # Outside the module tree: no parameters in the state_dict or the optimizer, and
        # LightningModule.train() never switches it out of eval mode.
        object.__setattr__(self, "teacher", teacher)
        # Kept out of the module tree so the state_dict has no second copy of the weights.
        if compile:  # adaptive ODE solvers (torchdiffeq) use ops with data-dependent shapes
            torch._dynamo.config.capture_dynamic_output_shape_ops = True
        object.__setattr__(self, "_forward", torch.compile(self.model) if compile else self.model)
        self.optim_cfg = dict(optim or DEFAULT_OPTIM)
        self.sched_cfg = dict(scheduler or {"_target_": "zoo.training.schedules.constant"})
        self.clock = TrainingClock(budget_s)  # a callback of this module (configure_callbacks)
        self._rng_to_restore: torch.Tensor | None = None
        self.label_smoothing = label_smoothing
        self.channels_last = channels_last
        num_classes = self.model.num_classes  # the builder's default when not given
        top_k = min(5, num_classes)
        for split in ("train", "val", "test"):
            setattr(
                self, f"{split}_acc1", MulticlassAccuracy(num_classes, top_k=1, average="micro")
            )
            setattr(
                self, f"{split}_acc5", MulticlassAccuracy(num_classes, top_k=top_k, average="micro")
            )
            setattr(self, f"{split}_loss", MeanMetric())
        # A checkpoint taken inside an epoch carries the epoch's running training metrics.
        self.train_acc1.persistent(True)
        self.train_loss.persistent(True)

    @classmethod
    def from_model_config(
        cls,
        model: dict[str, Any],
        data: dict[str, Any],
        dropout: float | None = None,
        **options: Any,
    ) -> ZooClassifier:
        """The classifier of a model config (``name``, ``pretrained``, builder arguments) for the
        data described by ``data``, every dropout option of the model set to ``dropout`` (None:
        the config's); ``options`` are the other arguments of the constructor. The target of
        conf/lightning_module/classifier.yaml."""
        kwargs = data_model_kwargs(model, data)
        kwargs = set_dropout(model["name"], kwargs, dropout)
        try:
            check_input_size(model["name"], (data["in_chans"], *data["image_size"]))
            return cls(
                model_name=model["name"],
                model_kwargs=kwargs,
                data=data,
                pretrained=model.get("pretrained") or False,
                **options,
            )
        except (ValueError, TypeError) as err:  # unknown model name or builder argument
            raise UserError(str(err)) from None

    def results(
        self, test_metrics: dict[str, float], best_score: float | None, monitor: str
    ) -> dict[str, Any]:
        """This module's entries of ``results.json``: MACs per image, the best validation top-1
        and the test metrics."""
        data = self.hparams.data or {}
        return {
            "macs": count_macs(self.model, (data["in_chans"], *data["image_size"])),
            "best_val_acc1": best_score,
            "test_acc1": test_metrics.get("test/acc1"),
            "test_acc5": test_metrics.get("test/acc5"),
            "test_loss": test_metrics.get("test/loss"),
        }

    @staticmethod
    def _check_adversarial(cfg: dict[str, Any] | None) -> dict[str, Any] | None:
        """``train.adversarial``: None, or {attack: fgsm|pgd, eps, steps, step_size}."""
        if not cfg:
            return None
        cfg = dict(cfg)
        unknown = set(cfg) - {"attack", "eps", "steps", "step_size"}
        if unknown:
            raise UserError(f"train.adversarial: unknown keys {sorted(unknown)}")
        cfg.setdefault("attack", "pgd")
        if cfg["attack"] not in ATTACKS:
            raise UserError(f"train.adversarial.attack={cfg['attack']!r}: use fgsm or pgd")
        defaults = {"eps": None, "steps": 3, "step_size": None}
        for key, (ok, expected) in ADVERSARIAL_CHECKS.items():
            if not ok(cfg.get(key, defaults[key])):
                raise UserError(
                    f"train.adversarial.{key}={cfg.get(key)!r} is not valid: use {expected}"
                )
        return cfg

    def _adversarial_batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Madry et al.'s inner maximisation, generated with BatchNorm in eval mode."""
        adv = dict(self.adversarial or {})
        data = self.hparams.data or {}
        kwargs: dict[str, Any] = {"mean": data.get("mean"), "std": data.get("std")}
        if adv["attack"] == "pgd":
            kwargs.update(steps=int(adv.get("steps", 3)), step_size=adv.get("step_size"))
        return attack(adv["attack"], self.model, x, y, float(adv["eps"]), **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._forward(x)

    def _loss(
        self, out: torch.Tensor | tuple, y: torch.Tensor, teacher_logits: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy (with ``teacher_logits``: the distillation loss of the main output); a
        tuple output is (main, *auxiliary) as GoogLeNet's in training."""
        main, *aux = out if isinstance(out, tuple) else (out,)
        if teacher_logits is None:
            loss = F.cross_entropy(main, y, label_smoothing=self.label_smoothing)
        else:
            loss = kd_loss(
                main,
                teacher_logits,
                y,
                self.distill["temperature"],
                self.distill["alpha"],
                label_smoothing=self.label_smoothing,
            )
        if aux:
            weight = getattr(self.model, "aux_loss_weight", 0.3)
            loss = loss + weight * sum(
                F.cross_entropy(a, y, label_smoothing=self.label_smoothing) for a in aux
            )
        return loss, main

    def _teacher_logits(self, x: torch.Tensor) -> torch.Tensor | None:
        teacher: Teacher | None = self.teacher
        if teacher is None:
            return None
        if teacher.shift.device != x.device:
            teacher.to(x.device)
        return teacher(x)

    def configure_callbacks(self) -> list[pl.Callback]:
        return [self.clock]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._rng_to_restore = checkpoint.get("torch_rng_state")

    def on_train_start(self) -> None:
        # Resumed inside an epoch (on_train_epoch_start is not called again for it): continue
        # the random stream where the checkpoint left it.
        if self._rng_to_restore is not None and self.trainer.fit_loop.restarted_mid_epoch:
            torch.set_rng_state(self._rng_to_restore)
        self._rng_to_restore = None

    def on_train_epoch_start(self) -> None:
        # Dropout and other randomness of epoch e depend only on (seed, e): resumed runs match.
        torch.manual_seed(self.hparams.seed * 1000 + self.current_epoch + 1)
        loader = getattr(self.trainer, "train_dataloader", None)
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.current_epoch)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        if self.adversarial:
            x = self._adversarial_batch(x, y)
        if hasattr(self.model, "reset_step_stats"):
            self.model.reset_step_stats()
        loss, logits = self._loss(self(x), y, self._teacher_logits(x))
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at epoch {self.current_epoch}, step "
                f"{self.global_step}; lower the learning rate or clip gradients "
                f"(trainer.gradient_clip_val); {kept_checkpoint(self.trainer)}"
            )
        self.train_loss.update(loss.detach())
        self.train_acc1.update(logits.detach(), y)
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_after_backward(self) -> None:
        if hasattr(self.model, "step_stats"):
            for key, value in self.model.step_stats().items():
                self.log(f"train/{key}", float(value), on_step=True, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        self.log("train/loss_epoch", self.train_loss.compute(), sync_dist=True)
        self.log("train/acc1", self.train_acc1.compute(), sync_dist=True)
        self.train_loss.reset()
        self.train_acc1.reset()

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> None:
        x, y = batch
        logits = tta_logits(self, x, self.tta if split == "test" else None)
        loss = F.cross_entropy(logits, y)
        getattr(self, f"{split}_loss").update(loss, weight=len(y))
        getattr(self, f"{split}_acc1").update(logits, y)
        getattr(self, f"{split}_acc5").update(logits, y)

    def _eval_epoch_end(self, split: str) -> None:
        values = {}
        for metric in ("loss", "acc1", "acc5"):
            m = getattr(self, f"{split}_{metric}")
            values[f"{split}/{metric}"] = m.compute()
            m.reset()
        if split == "val":
            check_finite_validation(self, values)
        for name, value in values.items():
            self.log(name, value, prog_bar=name.endswith("acc1"), sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch, from the data module (without setting up Lightning's
        training data early, which would start the loader before a checkpoint's state is loaded)."""
        trainer = self.trainer
        batches = len(trainer.datamodule.train_dataloader())
        limit = trainer.limit_train_batches
        if isinstance(limit, int):
            batches = min(batches, limit)
        elif limit is not None:
            batches = int(batches * limit)
        return max(1, -(-batches // trainer.accumulate_grad_batches))

    def configure_optimizers(self):
        factory, exclude_bn_bias = optimizer_factory(self.optim_cfg)
        groups = param_groups(self.model, self.optim_cfg.get("weight_decay", 0.0), exclude_bn_bias)
        optimizer = factory(groups)
        schedule = build(self.sched_cfg, "scheduler")
        steps_per_epoch = self.steps_per_epoch()
        if self.clock.budget_s:

            def progress(step: int) -> float:
                return self.clock.progress()
        else:
            total = steps_per_epoch * max(1, self.trainer.max_epochs or 1)
            if self.trainer.max_steps and self.trainer.max_steps > 0:
                total = min(total, self.trainer.max_steps)

            def progress(step: int) -> float:
                return step / total

        scheduler = schedule.scheduler(optimizer, progress, steps_per_epoch)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
