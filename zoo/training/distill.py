"""Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network",
arXiv:1503.02531, §2): the student fits the hard labels and the teacher's softened distribution.

``train.distill={teacher: PATH_OR_TAG, temperature: T, alpha: A}`` trains with :func:`kd_loss`::

    (1 - A) · CE(student, y) + A · T² · KL(softmax(teacher / T) ‖ softmax(student / T))

``A`` weights the distillation term, as in Hinton et al. and RepDistiller (``-a`` in
``train_student.py``); torchdistill's ``KDLoss`` uses ``alpha`` for the cross-entropy instead. The
T² factor keeps the soft term's gradients the same size when T changes (§2.1). The teacher is
frozen: eval mode, no gradients, and kept out of the student's state_dict and checkpoints.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import UserError
from zoo.models.base import main_output
from zoo.models.registry import is_model
from zoo.weights.checkpoint import model_from_checkpoint
from zoo.weights.pretrained import list_tags, resolve_source

DISTILL_KEYS = ("teacher", "temperature", "alpha")


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Hinton et al.'s loss; label smoothing applies to the cross-entropy term only."""
    ce = F.cross_entropy(student_logits, target, label_smoothing=label_smoothing)
    if alpha == 0:
        return ce
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - alpha) * ce + alpha * temperature**2 * soft


def check_distill(cfg: dict[str, Any] | None) -> dict[str, Any] | None:
    """``train.distill``: None, or ``{teacher, temperature, alpha}`` with T > 0 and A in [0, 1]."""
    if not cfg:
        return None
    cfg = dict(cfg)
    unknown = sorted(set(cfg) - set(DISTILL_KEYS))
    if unknown:
        raise UserError(f"train.distill: unknown keys {unknown}; use {', '.join(DISTILL_KEYS)}")
    if not cfg.get("teacher"):
        raise UserError("train.distill needs teacher=PATH or NAME:TAG, e.g. resnet20:fmnist")
    cfg.setdefault("temperature", 4.0)
    cfg.setdefault("alpha", 0.9)
    t, a = cfg["temperature"], cfg["alpha"]
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not t > 0 or math.isinf(t):
        raise UserError(f"train.distill.temperature={t!r} is not valid: use a number > 0")
    if not isinstance(a, (int, float)) or isinstance(a, bool) or not 0 <= a <= 1:
        raise UserError(f"train.distill.alpha={a!r} is not valid: use a number in [0, 1]")
    return {"teacher": str(cfg["teacher"]), "temperature": float(t), "alpha": float(a)}


def teacher_path(source: str) -> Path:
    """A teacher's weights file: a path, or ``NAME:TAG`` (a pretrained tag of a zoo model)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    name, sep, tag = source.partition(":")
    if sep and is_model(name):
        if tag not in list_tags(name):
            known = ", ".join(list_tags(name)) or "none"
            raise UserError(
                f"train.distill.teacher={source!r}: {name} has no pretrained tag {tag!r} "
                f"(tags: {known}); or give a .ckpt / exported .safetensors path"
            )
        return resolve_source(name, tag)
    raise UserError(
        f"train.distill.teacher={source!r}: no such file, and not NAME:TAG of a zoo model "
        "(e.g. resnet20:fmnist, or a .ckpt / exported .safetensors)"
    )


class Teacher(nn.Module):
    """A frozen model whose logits the student learns from.

    Inputs arrive normalised with the student's data statistics; when the teacher was trained with
    others (a different training split), they are re-normalised exactly (an affine map per channel).
    """

    def __init__(self, model: nn.Module, shift: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.model = model.requires_grad_(False)
        self.register_buffer("shift", shift.view(1, -1, 1, 1))
        self.register_buffer("scale", scale.view(1, -1, 1, 1))
        self.eval()

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # frozen: BatchNorm statistics and dropout never change

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x * self.scale + self.shift)
        return main_output(out)


def load_teacher(source: str, data: dict[str, Any]) -> Teacher:
    """The teacher of ``source`` for a student trained on ``data`` (``describe()`` of the data
    module); a one-line error when the data cannot serve the teacher's input or classes."""
    path = teacher_path(source)
    model, info = model_from_checkpoint(path)
    seen = dict(info.get("data") or {})
    kwargs = info.get("model_kwargs", {})
    in_chans = int(kwargs.get("in_chans") or seen.get("in_chans") or data["in_chans"])
    where = f"train.distill.teacher={source}"
    if in_chans != data["in_chans"]:
        raise UserError(
            f"{where} takes {in_chans}-channel images but data={data['name']} has "
            f"{data['in_chans']}; distil from a teacher trained on {data['in_chans']}-channel data"
        )
    size = seen.get("image_size")
    if size and list(size) != list(data["image_size"]):
        raise UserError(
            f"{where} was trained on {size[0]}x{size[1]} images but data={data['name']} serves "
            f"{data['image_size'][0]}x{data['image_size'][1]}; the data module serves one size"
        )
    classes = getattr(model, "num_classes", None)
    if classes is not None and classes != data["num_classes"]:
        raise UserError(
            f"{where} predicts {classes} classes but data={data['name']} has {data['num_classes']}"
        )
    mean_s, std_s = torch.tensor(data["mean"]), torch.tensor(data["std"])
    mean_t = torch.tensor(seen.get("mean") or data["mean"])
    std_t = torch.tensor(seen.get("std") or data["std"])
    # (x * std_s + mean_s - mean_t) / std_t for x normalised with the student's statistics
    return Teacher(model, (mean_s - mean_t) / std_t, std_s / std_t)
