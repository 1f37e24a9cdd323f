"""``python evaluate.py task=robustness ckpt_path=PATH [task.attack=pgd|fgsm]``: the accuracy of
one checkpoint under L∞ attack over a list of epsilons (:mod:`zoo.analysis.robustness`), with 95 %
Wilson intervals, in ``robustness.json`` and ``robustness.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from zoo.analysis.landscape import fixed_batches
from zoo.analysis.robustness import plot, robust_accuracy
from zoo.io import atomic_write_json
from zoo.tasks.common import load_checkpoint_and_data


def run(cfg: DictConfig) -> dict[str, Any]:
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
    title = f"{info['model']}: {task.attack} (95 % Wilson CI, {result['num_images']} images)"
    plot(accuracy, title, out / "robustness.png")
    for eps, p in accuracy.items():
        lo, hi = p.interval()
        print(
            f"  eps {eps:<6g} top-1 {100 * p.value:.2f}% "
            f"(95% CI {100 * lo:.1f}-{100 * hi:.1f}%, {p.successes}/{p.trials})"
        )
    return result
