"""L∞ adversarial attacks for any ``nn.Module``: FGSM (Goodfellow et al. 2015) and PGD with a
random start (Madry et al. 2018). Used by adversarial training and by the robustness analysis.

Epsilon and step size are in pixel units (images in [0, 1]); the model sees normalized inputs.
Pass the normalization's per-channel ``mean`` and ``std`` and the attack works in pixel space:
it un-normalizes, perturbs, projects back onto the ε-ball around the clean image and onto
[0, 1], and returns the normalized adversarial batch. Attacks run with the model in eval mode
(BatchNorm running statistics are neither used from the batch nor updated) and restore its mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import UserError
from zoo.models.base import eval_mode, main_output

ATTACKS = ("fgsm", "pgd")


def _stats(x: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    m = torch.as_tensor(0.0 if mean is None else mean, dtype=x.dtype).expand(x.shape[1])
    s = torch.as_tensor(1.0 if std is None else std, dtype=x.dtype).expand(x.shape[1])
    return m.reshape(shape).to(x.device), s.reshape(shape).to(x.device)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    targeted: bool = False,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Projected gradient ascent on the cross-entropy within ‖δ‖∞ ≤ ``eps`` (pixel units).

    ``step_size`` defaults to 2.5·eps/steps (Madry et al.). With ``targeted``, ``y`` holds the
    wanted labels and the cross-entropy to them is descended instead. ``mask`` (broadcast to x,
    1 where pixels may change) restricts the perturbation. Returns the normalized adversarial x.
    """
    if eps < 0 or steps < 1:
        raise UserError(f"attack needs eps >= 0 and steps >= 1 (got eps={eps}, steps={steps})")
    step_size = 2.5 * eps / steps if step_size is None else float(step_size)
    m, s = _stats(x, mean, std)
    clean = (x.detach() * s + m).clamp(0, 1)
    keep = torch.ones_like(clean) if mask is None else mask.to(clean).expand_as(clean)
    sign = -1.0 if targeted else 1.0
    adv = clean.clone()
    if random_start and eps > 0:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        adv = (adv + (2 * noise - 1) * eps * keep).clamp(0, 1)
    with eval_mode(model):
        for _ in range(steps):
            adv.requires_grad_(True)
            with torch.enable_grad():
                out = model((adv - m) / s)
                loss = F.cross_entropy(main_output(out), y)
                (grad,) = torch.autograd.grad(loss, adv)
            with torch.no_grad():
                adv = adv + sign * step_size * grad.sign() * keep
                adv = torch.min(torch.max(adv, clean - eps), clean + eps).clamp(0, 1)
    return ((adv - m) / s).detach()


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """One signed-gradient step of size ``eps`` from the clean image."""
    return pgd(model, x, y, eps, steps=1, step_size=eps, random_start=False, mean=mean, std=std)


def attack(name: str, model: nn.Module, x, y, eps: float, **kwargs: Any) -> torch.Tensor:
    """``fgsm`` or ``pgd`` by name (``kwargs`` as those functions take)."""
    if name == "fgsm":
        return fgsm(model, x, y, eps, mean=kwargs.get("mean"), std=kwargs.get("std"))
    if name == "pgd":
        return pgd(model, x, y, eps, **kwargs)
    raise UserError(f"unknown attack {name!r}; use one of {', '.join(ATTACKS)}")
