"""``python evaluate.py ckpt_path=PATH [data=...] [task.tta=flip]``: the metrics of one checkpoint
(:mod:`zoo.evaluation.metrics`) in ``eval.json``, with the confusion matrix, the reliability diagram
and the most confidently wrong test images. Takes Lightning checkpoints and exported
``.safetensors`` files alike; the data are normalised with the statistics stored with the
checkpoint (those of its training split), not recomputed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from zoo.evaluation.metrics import evaluate_model, plot_metrics, worst_errors_figure
from zoo.io import atomic_write_figure, atomic_write_json
from zoo.tasks.common import load_checkpoint_and_data


def run(cfg: DictConfig) -> dict[str, Any]:
    model, info, dm = load_checkpoint_and_data(cfg, "eval")
    result = evaluate_model(
        model,
        dm.test_dataloader(),
        model.num_classes,
        tta=cfg.task.tta,
        worst=cfg.task.worst_errors,
    )
    result = {
        "model": info["model"],
        "checkpoint": str(cfg.ckpt_path),
        "dataset": dm.name,
        "classes": list(dm.classes),
        **result,
    }
    out = Path(cfg.output_dir)
    atomic_write_json(out / "eval.json", result)
    plot_metrics(result, out)
    figure = worst_errors_figure(dm.test_x, result["worst_errors"], dm.classes)
    atomic_write_figure(out / "worst_errors.png", figure)
    rows = [
        ("model", result["model"]),
        ("dataset", dm.name),
        ("images", result["num_images"]),
        ("top-1", f"{100 * result['acc1']:.2f}%"),
        ("top-5", f"{100 * result['acc5']:.2f}%"),
        ("loss", f"{result['loss']:.4f}"),
        ("ECE", f"{result['ece']:.4f}"),
        ("macro F1", f"{sum(result['per_class']['f1']) / model.num_classes:.4f}"),
        ("TTA", result["tta"] or "none"),
        ("written", str(out / "eval.json")),
    ]
    print("\n".join(f"  {k:<9} {v}" for k, v in rows))
    return result
