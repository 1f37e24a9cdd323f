"""The metrics of one classifier on a test set (``python evaluate.py ckpt_path=PATH``).

Top-1, top-5, loss, per-class precision/recall/F1 (torchmetrics), the confusion matrix (PNG),
calibration (expected calibration error and a reliability diagram PNG), the most confidently wrong
test images with their true and predicted labels (``worst_errors.png``, the debugging aid of
Goodfellow et al. 2016, Sec. 11.5) and optional test-time augmentation (:mod:`zoo.data.tta`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from zoo.data.tta import check_tta, tta_logits
from zoo.io import atomic_write_figure, pyplot


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    batches,
    num_classes: int,
    tta: str | None = None,
    n_bins: int = 15,
    worst: int = 0,
) -> dict[str, Any]:
    """Metrics of ``model`` over ``batches``; with ``worst``, also the ``worst`` most confidently
    wrong predictions as ``{index, true, pred, confidence}`` (index in batch order), most
    confident first."""
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
    confidences, predictions, targets = [], [], []
    tta = check_tta(tta)
    for x, y in batches:
        logits = tta_logits(model, x, tta)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        n += len(y)
        probs = logits.softmax(1)
        for m in metrics.values():
            m.update(probs, y)
        conf, pred = probs.max(1)
        confidences.append(conf)
        predictions.append(pred)
        targets.append(y)
    out = {k: m.compute() for k, m in metrics.items()}
    conf, pred, target = torch.cat(confidences), torch.cat(predictions), torch.cat(targets)
    corr = (pred == target).float()
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
        "tta": tta,
        "worst_errors": most_confident_errors(conf, pred, target, worst),
    }


def most_confident_errors(
    confidence: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, k: int
) -> list[dict[str, Any]]:
    """The ``k`` wrong predictions with the highest confidence, most confident first (ties in
    index order)."""
    wrong = torch.nonzero(pred != target).flatten()
    order = torch.sort(confidence[wrong], descending=True, stable=True).indices[:k]
    return [
        {
            "index": int(i),
            "true": int(target[i]),
            "pred": int(pred[i]),
            "confidence": float(confidence[i]),
        }
        for i in wrong[order]
    ]


def worst_errors_figure(
    images: torch.Tensor, errors: list[dict[str, Any]], class_names: Sequence[str] = ()
):
    """A grid of ``images[e["index"]]`` (uint8 C×H×W) titled with true and predicted labels."""
    plt = pyplot()

    def name(label: int) -> str:
        return class_names[label] if class_names else str(label)

    cols = min(8, max(1, len(errors)))
    rows = max(1, math.ceil(len(errors) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, error in zip(axes.flat, errors, strict=False):
        image = images[error["index"]]
        if image.shape[0] == 1:
            ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(
            f"true: {name(error['true'])}\npred: {name(error['pred'])} "
            f"({100 * error['confidence']:.0f}%)",
            fontsize=7,
        )
    if not errors:
        axes[0, 0].text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
    fig.suptitle("most confidently wrong test images", fontsize=9)
    return fig


def plot_metrics(result: dict[str, Any], out: Path) -> list[Path]:
    """``confusion_matrix.png`` and ``reliability.png`` of :func:`evaluate_model`'s result."""
    plt = pyplot()
    cm = torch.tensor(result["confusion_matrix"], dtype=torch.float)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    im = ax.imshow(cm / cm.sum(1, keepdim=True).clamp_min(1), cmap="Blues", vmin=0, vmax=1)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax)
    written = [atomic_write_figure(out / "confusion_matrix.png", fig)]
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
    written.append(atomic_write_figure(out / "reliability.png", fig))
    return written
