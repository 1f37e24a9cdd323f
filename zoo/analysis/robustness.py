"""Accuracy under L∞ attack (FGSM, PGD from :mod:`zoo.attacks`) over a list of epsilons, for any
``nn.Module``; epsilons in pixel units of [0, 1] images.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from zoo.attacks import ATTACKS, attack
from zoo.errors import UserError
from zoo.modes import eval_mode
from zoo.stats import Proportion


def robust_accuracy(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    epsilons: Sequence[float],
    attack_name: str = "pgd",
    seed: int = 0,
    **kwargs: Any,
) -> dict[float, Proportion]:
    """Images still classified correctly under attack, for every epsilon (0: clean accuracy), as
    a :class:`zoo.stats.Proportion` (``.value``, and ``.interval()`` for the Wilson interval of a
    sample of images)."""
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


def run(cfg) -> dict[str, Any]:
    """``python evaluate.py task=robustness ckpt_path=PATH [task.attack=pgd|fgsm]``."""
    from pathlib import Path

    from zoo.analysis.landscape import fixed_batches
    from zoo.checkpoint import load_checkpoint_and_data
    from zoo.io import atomic_write_figure, atomic_write_json, pyplot

    task = cfg.task
    model, info, dm = load_checkpoint_and_data(cfg, "robustness", "test")
    batches = fixed_batches(dm, task.num_images, int(task.batch_size), split="test")
    epsilons = [float(e) for e in task.epsilons]
    kwargs: dict[str, Any] = {"mean": dm.mean, "std": dm.std}
    if task.attack == "pgd":
        kwargs.update(steps=int(task.steps), step_size=task.step_size)
    accuracy = robust_accuracy(model, batches, epsilons, task.attack, int(cfg.seed), **kwargs)
    result = {
        "model": info["model"],
        "checkpoint": str(cfg.ckpt_path),
        "attack": task.attack,
        "steps": int(task.steps) if task.attack == "pgd" else 1,
        "step_size": task.step_size,
        "num_images": sum(len(y) for _, y in batches),
        "seed": int(cfg.seed),
        "accuracy": {str(k): p.value for k, p in accuracy.items()},
        "correct": {str(k): p.successes for k, p in accuracy.items()},
        "ci95": {str(k): list(p.interval()) for k, p in accuracy.items()},
    }
    out = Path(cfg.output_dir)
    atomic_write_json(out / "robustness.json", result)

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    values = [100 * p.value for p in accuracy.values()]
    bars = [[100 * (p.value - p.interval()[0]) for p in accuracy.values()]]
    bars.append([100 * (p.interval()[1] - p.value) for p in accuracy.values()])
    ax.errorbar(list(accuracy), values, yerr=bars, fmt="o-", capsize=3)
    title = f"{info['model']}: {task.attack} (95 % Wilson CI, {result['num_images']} images)"
    ax.set(xlabel="ε (pixel units, L∞)", ylabel="top-1 (%)", title=title)
    atomic_write_figure(out / "robustness.png", fig)
    for eps, p in accuracy.items():
        lo, hi = p.interval()
        print(
            f"  eps {eps:<6g} top-1 {100 * p.value:.2f}% "
            f"(95% CI {100 * lo:.1f}-{100 * hi:.1f}%, {p.successes}/{p.trials})"
        )
    return result
