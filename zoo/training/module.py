"""The one LightningModule that trains every zoo model."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from zoo.analysis.robustness import ATTACKS, attack
from zoo.errors import UserError
from zoo.factory import create_model
from zoo.fast import optimize

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""


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


def build_optimizer(params: list[dict], cfg: dict) -> torch.optim.Optimizer:
    name = cfg["name"]
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg["lr"],
            momentum=cfg.get("momentum", 0.9),
            nesterov=cfg.get("nesterov", False),
        )
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], betas=tuple(cfg.get("betas", (0.9, 0.999))))
    raise UserError(f"unknown optimizer {name!r}; use optim=sgd or optim=adamw")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: dict | None, max_epochs: int, steps_per_epoch: int
) -> dict | None:
    """Per-step schedule: multistep (epochs or fractions), cosine, onecycle; linear warm-up."""
    if not cfg or cfg.get("name") in (None, "none", "constant"):
        return None
    name = cfg["name"]
    total = max(1, max_epochs * steps_per_epoch)
    warmup = int(cfg.get("warmup_epochs", 0) * steps_per_epoch)
    if name == "onecycle":
        max_lrs = [g["lr"] for g in optimizer.param_groups]
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lrs, total_steps=total, pct_start=cfg.get("pct_start", 0.25)
        )
        return {"scheduler": sched, "interval": "step"}

    if name == "multistep":
        milestones = [
            m * max_epochs if isinstance(m, float) and m < 1 else m for m in cfg["milestones"]
        ]
        steps = [int(m * steps_per_epoch) for m in milestones]
        gamma = cfg.get("gamma", 0.1)

        def factor(step: int) -> float:
            return gamma ** sum(step >= s for s in steps)
    elif name == "cosine":
        floor = cfg.get("min_lr_ratio", 0.0)

        def factor(step: int) -> float:
            t = min(1.0, max(0, step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    else:
        raise UserError(f"unknown scheduler {name!r}; use multistep, cosine, onecycle or none")

    def with_warmup(step: int) -> float:
        return factor(step) * (min(1.0, (step + 1) / warmup) if warmup else 1.0)

    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, with_warmup)
    return {"scheduler": sched, "interval": "step"}


class ZooClassifier(pl.LightningModule):
    """Cross-entropy training of ``create_model(model_name, **model_kwargs)``.

    Hyper-parameters saved in every checkpoint: ``model_name``, ``model_kwargs`` and ``data``
    (dataset name, classes, channels, size, mean/std), enough to rebuild the model and its
    preprocessing from the checkpoint alone.
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(model_name, pretrained=pretrained, **model_kwargs)
        channels_last = channels_last or fast
        if fast:
            optimize(self.model)  # exact convolution rewrites + channels_last (zoo.fast)
        elif channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.adversarial = self._check_adversarial(adversarial)
        # Kept out of the module tree so the state_dict has no second copy of the weights.
        object.__setattr__(self, "_forward", torch.compile(self.model) if compile else self.model)
        self.optim_cfg = dict(optim or {"name": "sgd", "lr": 0.1, "weight_decay": 5e-4})
        self.sched_cfg = dict(scheduler or {})
        self.label_smoothing = label_smoothing
        self.channels_last = channels_last
        num_classes = int(model_kwargs.get("num_classes") or 10)
        top_k = min(5, num_classes)
        for split in ("train", "val", "test"):
            setattr(
                self, f"{split}_acc1", MulticlassAccuracy(num_classes, top_k=1, average="micro")
            )
            setattr(
                self, f"{split}_acc5", MulticlassAccuracy(num_classes, top_k=top_k, average="micro")
            )
            setattr(self, f"{split}_loss", MeanMetric())

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
        if float(cfg.get("eps", -1)) < 0:
            raise UserError("train.adversarial needs eps >= 0 (pixel units), e.g. eps=0.03")
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
        self, out: torch.Tensor | tuple, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy; a tuple output is (main, *auxiliary) as GoogLeNet's in training."""
        if isinstance(out, tuple):
            main, *aux = out
            weight = getattr(self.model, "aux_loss_weight", 0.3)
            loss = F.cross_entropy(main, y, label_smoothing=self.label_smoothing)
            loss = loss + weight * sum(
                F.cross_entropy(a, y, label_smoothing=self.label_smoothing) for a in aux
            )
            return loss, main
        return F.cross_entropy(out, y, label_smoothing=self.label_smoothing), out

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
        loss, logits = self._loss(self(x), y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at epoch {self.current_epoch}, step "
                f"{self.global_step}; lower the learning rate or clip gradients "
                "(trainer.gradient_clip_val); the last good checkpoint is kept in checkpoints/"
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
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        getattr(self, f"{split}_loss").update(loss, weight=len(y))
        getattr(self, f"{split}_acc1").update(logits, y)
        getattr(self, f"{split}_acc5").update(logits, y)

    def _eval_epoch_end(self, split: str) -> None:
        for metric in ("loss", "acc1", "acc5"):
            m = getattr(self, f"{split}_{metric}")
            self.log(f"{split}/{metric}", m.compute(), prog_bar=metric == "acc1", sync_dist=True)
            m.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self):
        cfg = self.optim_cfg
        groups = param_groups(
            self.model, cfg.get("weight_decay", 0.0), cfg.get("exclude_bn_bias", False)
        )
        optimizer = build_optimizer(groups, cfg)
        steps = max(
            1, int(self.trainer.estimated_stepping_batches) // max(1, self.trainer.max_epochs or 1)
        )
        sched = build_scheduler(optimizer, self.sched_cfg, self.trainer.max_epochs or 1, steps)
        if sched is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": sched}
