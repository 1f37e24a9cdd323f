"""Accuracy under L∞ attack (FGSM, PGD from :mod:`zoo.analysis.attacks`) over a list of epsilons,
for any ``nn.Module``; epsilons in pixel units of [0, 1] images.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.analysis.attacks import ATTACKS, attack
from zoo.errors import UserError
from zoo.evaluation.uncertainty import Proportion
from zoo.io import atomic_write_figure, pyplot
from zoo.models.base import eval_mode


def robust_accuracy(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    epsilons: Sequence[float],
    attack_name: str = "pgd",
    seed: int = 0,
    **kwargs: Any,
) -> dict[float, Proportion]:
    """Images still classified correctly under attack, for every epsilon (0: clean accuracy), as
    a :class:`zoo.evaluation.uncertainty.Proportion` (``.value``, and ``.interval()`` for the
    Wilson interval of a sample of images)."""
    if attack_name not in ATTACKS:
        raise UserError(f"unknown attack {attack_name!r}; use one of {', '.join(ATTACKS)}")
    if any(e < 0 for e in epsilons):
        raise UserError(f"epsilons must be >= 0, got {list(epsilons)}")
    batches = list(batches)
    result = {}
    with eval_mode(model):
        for eps in epsilons:
            gen = torch.Generator().manual_seed(seed)
            correct = n = 0
            for x, y in batches:
                extra = dict(kwargs, generator=gen) if attack_name == "pgd" else kwargs
                adv = attack(attack_name, model, x, y, float(eps), **extra) if eps > 0 else x
                with torch.no_grad():
                    correct += int((model(adv).argmax(1) == y).sum())
                n += len(y)
            if n == 0:
                raise UserError("no images to attack")
            result[float(eps)] = Proportion(correct, n)
    return result


def plot(accuracy: dict[float, Proportion], title: str, path: Path) -> Path:
    """Top-1 against ε (:func:`robust_accuracy`'s result) with 95 % Wilson intervals."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    values = [100 * p.value for p in accuracy.values()]
    bars = [[100 * (p.value - p.interval()[0]) for p in accuracy.values()]]
    bars.append([100 * (p.interval()[1] - p.value) for p in accuracy.values()])
    ax.errorbar(list(accuracy), values, yerr=bars, fmt="o-", capsize=3)
    ax.set(xlabel="ε (pixel units, L∞)", ylabel="top-1 (%)", title=title)
    return atomic_write_figure(path, fig)
