"""A training run's ``results.json``: what the module, the trainer and the reporting callbacks
measured, its summary table, and the number a sweeper compares runs by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from zoo.errors import UserError
from zoo.models.registry import count_params
from zoo.training.callbacks import TestCurve
from zoo.training.recalibrate import RecalibrateBatchNorm


def collect_results(
    trainer: pl.Trainer,
    module: pl.LightningModule,
    data_info: dict[str, Any],
    clock: dict[str, Any],
    test_metrics: dict[str, float],
    seed: int,
    recipe: str | None = None,
) -> dict[str, Any]:
    """The entries of ``results.json``. The module adds its own (``module.results``: its metrics,
    and ``macs`` when it knows its input size). ``recipe`` names the experiment config the run
    followed, so that reports never average runs of two recipes."""
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_score
    best_score = float(best) if best is not None else None
    results: dict[str, Any] = {
        "model": module.hparams.model_name,
        "dataset": data_info["name"],
        "model_kwargs": module.hparams.model_kwargs,
        "num_params": count_params(module.model),
        "macs": None,  # keeps its place when the module's results give it
        "epochs": trainer.current_epoch,
        "global_steps": trainer.global_step,
        "wall_time_s": round(clock["elapsed_s"], 2),
        "images_seen": clock["images"],
        "budget_s": clock["budget_s"],
        "pieces": clock["pieces"],  # each resumed piece's command, steps and training seconds
        "recipe": recipe,
        **module.results(test_metrics, best_score, checkpoint.monitor),
        "seed": seed,
        "threads": torch.get_num_threads(),
        "best_checkpoint": checkpoint.best_model_path,
        "data": data_info,
    }
    for callback in trainer.callbacks:  # what the reporting callbacks measured
        if isinstance(callback, (TestCurve, RecalibrateBatchNorm)):
            results.update(callback.results())
    return results


def optimized_metric(results: dict[str, Any], name: str, out: Path) -> float:
    """The number a sweeper compares runs by (NaN when the run did not measure it); a name that is
    not a result is a UserError rather than a NaN that would quietly lose every comparison."""
    if name not in results:
        numbers = [k for k, v in results.items() if isinstance(v, (int, float, type(None)))]
        raise UserError(
            f"optimized_metric={name} is not a result of this run (its results.json in {out} is "
            f"complete); use one of: {', '.join(numbers)}"
        )
    metric = results[name]
    return float(metric) if isinstance(metric, (int, float)) else float("nan")


def print_summary(results: dict, out: Path) -> None:
    budget = f", budget {results['budget_s']:g} s" if results.get("budget_s") else ""
    rows = [
        ("model", results["model"]),
        ("dataset", results["dataset"]),
        ("params", f"{results['num_params']:,}"),
        ("MACs / image", f"{results['macs'] / 1e6:.2f} M" if results["macs"] else "–"),
        ("epochs", f"{results['epochs']} ({results['images_seen']:,} images)"),
        ("wall time", f"{results['wall_time_s']:.1f} s ({results['threads']} threads{budget})"),
    ]
    if "test_acc1" in results:
        rows += [
            ("best val top-1", _pct(results["best_val_acc1"])),
            ("test top-1", _pct(results["test_acc1"])),
            ("test top-5", _pct(results["test_acc5"])),
            ("test loss", _num(results["test_loss"])),
        ]
    else:  # a module of its own (e.g. zoo.flows): its best-validation and test numbers
        rows += [
            (k, _num(v))
            for k, v in results.items()
            if k.startswith(("best_val", "test_")) and (v is None or isinstance(v, (int, float)))
        ]
    rows.append(("run dir", str(out)))
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in rows) + "\n", flush=True)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
