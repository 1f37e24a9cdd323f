"""``python evaluate.py ckpt_path=PATH [data=...] [task.tta=true]``: metrics of one checkpoint.

Top-1, top-5, loss, per-class precision/recall/F1 (torchmetrics), the confusion matrix (PNG),
calibration (expected calibration error and a reliability diagram PNG) and optional flip test-time
augmentation. Prints a table and writes ``eval.json`` in the output directory. Takes Lightning
checkpoints and exported ``.safetensors`` files alike. The data are normalised with the statistics
stored with the checkpoint (those of its training split), not recomputed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from zoo.checkpoint import load_checkpoint_and_data
from zoo.io import atomic_write_figure, atomic_write_json, pyplot


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module, batches, num_classes: int, tta: bool = False, n_bins: int = 15
) -> dict[str, Any]:
    model.eval()
    metrics = {
        "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
        "acc5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
        "precision": MulticlassPrecision(num_classes, average=None),
        "recall": MulticlassRecall(num_classes, average=None),
        "f1": MulticlassF1Score(num_classes, average=None),
        "ece": MulticlassCalibrationError(num_classes, n_bins=n_bins, norm="l1"),
        "confusion": MulticlassConfusionMatrix(num_classes),
    }
    loss_sum, n = 0.0, 0
    confidences, correct = [], []
    for x, y in batches:
        logits = model(x)
        if tta:
            logits = (logits.softmax(1) + model(x.flip(-1)).softmax(1)).div(2).log()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        n += len(y)
        probs = logits.softmax(1)
        for m in metrics.values():
            m.update(probs, y)
        conf, pred = probs.max(1)
        confidences.append(conf)
        correct.append(pred == y)
    out = {k: m.compute() for k, m in metrics.items()}
    conf, corr = torch.cat(confidences), torch.cat(correct).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = (conf > lo) & (conf <= hi)
        bins.append(
            {
                "lo": float(lo),
                "hi": float(hi),
                "count": int(mask.sum()),
                "confidence": float(conf[mask].mean()) if mask.any() else None,
                "accuracy": float(corr[mask].mean()) if mask.any() else None,
            }
        )
    return {
        "num_images": n,
        "acc1": float(out["acc1"]),
        "acc5": float(out["acc5"]),
        "loss": loss_sum / max(1, n),
        "ece": float(out["ece"]),
        "per_class": {
            "precision": out["precision"].tolist(),
            "recall": out["recall"].tolist(),
            "f1": out["f1"].tolist(),
        },
        "confusion_matrix": out["confusion"].tolist(),
        "reliability_bins": bins,
        "tta_flip": tta,
    }


def _plots(result: dict[str, Any], out: Path) -> None:
    plt = pyplot()
    cm = torch.tensor(result["confusion_matrix"], dtype=torch.float)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(cm / cm.sum(1, keepdim=True).clamp_min(1), cmap="Blues", vmin=0, vmax=1)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax)
    atomic_write_figure(out / "confusion_matrix.png", fig)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    bins = [b for b in result["reliability_bins"] if b["count"]]
    ax.bar(
        [(b["lo"] + b["hi"]) / 2 for b in bins],
        [b["accuracy"] for b in bins],
        width=1 / len(result["reliability_bins"]),
        edgecolor="k",
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], "r--", label="perfect calibration")
    ax.set(xlabel="confidence", ylabel="accuracy", title=f"reliability (ECE {result['ece']:.3f})")
    ax.legend()
    atomic_write_figure(out / "reliability.png", fig)


def run(cfg: DictConfig) -> dict[str, Any]:
    model, info, dm = load_checkpoint_and_data(cfg, "eval")
    num_classes = model.num_classes
    result = evaluate_model(model, dm.test_dataloader(), num_classes, tta=cfg.task.tta)
    result = {
        "model": info["model"],
        "checkpoint": str(cfg.ckpt_path),
        "dataset": dm.name,
        **result,
    }
    out = Path(cfg.output_dir)
    atomic_write_json(out / "eval.json", result)
    _plots(result, out)
    rows = [
        ("model", result["model"]),
        ("dataset", dm.name),
        ("images", result["num_images"]),
        ("top-1", f"{100 * result['acc1']:.2f}%"),
        ("top-5", f"{100 * result['acc5']:.2f}%"),
        ("loss", f"{result['loss']:.4f}"),
        ("ECE", f"{result['ece']:.4f}"),
        ("macro F1", f"{sum(result['per_class']['f1']) / num_classes:.4f}"),
        ("flip TTA", result["tta_flip"]),
        ("written", str(out / "eval.json")),
    ]
    print("\n".join(f"  {k:<9} {v}" for k, v in rows))
    return result
