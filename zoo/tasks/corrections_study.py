"""The measurements of docs/corrections.md: minimal stable corrections over many test inputs,
against targeted PGD restricted to the same features
(:func:`zoo.analysis.corrections.correct_many`).

``python evaluate.py task=corrections_study task.part=tabular output_dir=docs/corrections`` — a
small ReLU MLP on scikit-learn's breast-cancer data (Wolberg et al., UCI; 30 features scaled to
[0, 1]), corrected over two features like the paper's loan decisions (Zhang et al. 2018, Sec.
5.1), with a 2-D plot of one correction. Needs the ``examples`` extra (scikit-learn).

``python evaluate.py task=corrections_study task.part=images
ckpt_path=weights/lenet5_fmnist.safetensors task.first=0 task.n=25 output_dir=docs/corrections``
— the published LeNet-5 (ReLU, max-pooling) on Fashion-MNIST test images (``data=``): the
runner-up class as target, 20 free pixels (the 4×5 window of largest gradient), in chunks that
``task.part=merge-images`` pools into ``images.json``.

For each input: success, time, the weighted L1 distance (feature-range units, i.e. pixel units for
images) of the correction and of the smallest-ε targeted PGD point found by bisection, and whether
that PGD point lies in one of the activation regions the correction explored (there the LP's
minimum can never be larger).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle
from omegaconf import DictConfig
from torch import nn

from zoo.analysis.corrections import (
    FeatureSpace,
    correct_many,
    minimal_correction,
    salient_patch,
    summarize,
)
from zoo.bench.timing import gemm_gflops
from zoo.errors import UserError
from zoo.io import atomic_write_figure, atomic_write_json, pyplot
from zoo.tasks.common import load_checkpoint_and_data

PARTS = ("tabular", "images", "merge-images")


def run(cfg: DictConfig) -> dict[str, Any]:
    part, n, out = cfg.task.part, int(cfg.task.n), Path(cfg.output_dir)
    if part not in PARTS:
        raise UserError(f"task.part={part!r}: use one of {', '.join(PARTS)}")
    if n < 1:
        raise UserError(f"task.n={n}: correct at least one input")
    stamp = {"date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads()}
    stamp["gemm_gflops"] = round(gemm_gflops(), 1)
    if part == "tabular":
        summary = tabular(out, stamp, n)
    elif part == "images":
        model, info, dm = load_checkpoint_and_data(cfg, "corrections_study", "test")
        pixels = dm.test_x[int(cfg.task.first) : int(cfg.task.first) + n]
        source = f"{info['model']} {cfg.ckpt_path}"
        summary = images(model, info, source, pixels, out, stamp, int(cfg.task.first))
    else:
        summary = merge_images(out)
    print(json.dumps(summary, indent=2))
    return summary


# --- tabular ------------------------------------------------------------------------------------

FEATURES = ("worst radius", "worst concave points")


def breast_cancer_mlp(seed: int = 0):
    """Scaled data (training min/max to [0, 1]) and a 30-32-32-2 ReLU MLP trained on 70 %."""
    try:
        from sklearn.datasets import load_breast_cancer
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise UserError(
            "the tabular example needs scikit-learn: pip install 'zoo[examples]'"
        ) from None

    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.3, random_state=seed, stratify=data.target
    )
    low, high = x_train.min(0), x_train.max(0)
    scale = lambda v: torch.tensor((v - low) / (high - low))  # noqa: E731
    x_train, x_test = scale(x_train), scale(x_test)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2)
    ).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    labels = torch.tensor(y_train)
    for _ in range(300):
        optimizer.zero_grad()
        F.cross_entropy(model(x_train), labels).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == torch.tensor(y_test)).double().mean())
    names = [str(n) for n in data.feature_names]
    return model, x_test, y_test, names, [str(n) for n in data.target_names], accuracy


def tabular(out: Path, stamp: dict, n: int = 100, radius: float = 0.02) -> dict:
    model, x_test, _, names, classes, accuracy = breast_cancer_mlp()
    features = [names.index(f) for f in FEATURES]
    inputs = list(x_test[:n])
    with torch.no_grad():
        predicted = model(torch.stack(inputs)).argmax(1)
    targets = (1 - predicted).tolist()  # the other decision
    lo_of = lambda i: np.minimum(0.0, inputs[i][features].numpy())  # noqa: E731
    hi_of = lambda i: np.maximum(1.0, inputs[i][features].numpy())  # noqa: E731
    rows = correct_many(
        model, inputs, targets, lambda i: features, lo_of, hi_of, lambda i: radius, 100
    )
    summary = {
        "data": "scikit-learn load_breast_cancer, 70/30 stratified split (seed 0), min-max scaled",
        "model": "MLP 30-32-32-2 ReLU, Adam 1e-2, 300 full-batch steps",
        "test_accuracy": accuracy,
        "features": list(FEATURES),
        "radius": radius,
        "max_regions": 100,
        **stamp,
        **summarize(rows),
    }
    stable = [i for i, r in enumerate(rows) if r["found"] and r["stable"]]
    shown = [i for i in stable if rows[i]["num_regions"] > 1] or stable
    if shown:  # a correction near the boundary, across regions where there is one
        example = min(shown, key=lambda i: rows[i]["distance"])
        _plot_tabular(model, inputs[example], targets[example], features, radius, classes, out)
        summary["plotted_input"] = example
    atomic_write_json(out / "tabular.json", {"summary": summary, "rows": rows})
    return summary


def _plot_tabular(model, x, target, features, radius, classes, out: Path) -> None:
    plt = pyplot()

    lo = np.minimum(0.0, x[features].numpy())
    hi = np.maximum(1.0, x[features].numpy())
    result = minimal_correction(model, x, target, features, radius, (lo, hi))
    axis = [np.linspace(lo[j], hi[j], 301) for j in range(2)]
    g0, g1 = np.meshgrid(*axis, indexing="ij")
    points = np.stack([g0.ravel(), g1.ravel()], 1)
    space = FeatureSpace(model, x, features, lo, hi)
    with torch.no_grad():
        decision = model(space.to_input(torch.tensor((points - lo) / (hi - lo))))
    decision = decision.argmax(1).numpy().reshape(g0.shape)
    union = np.zeros(len(points), bool)
    for a, b in result.pieces:
        union |= np.all(points @ a.T <= b + 1e-9, axis=1)
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.contourf(g0, g1, decision, levels=[-0.5, 0.5, 1.5], colors=["#f4c7c3", "#c6dbef"], alpha=0.8)
    ax.contour(g0, g1, decision, levels=[0.5], colors="k", linewidths=0.8)
    ax.contourf(g0, g1, union.reshape(g0.shape), levels=[0.5, 1.5], colors="none", hatches=["///"])
    ax.contour(g0, g1, union.reshape(g0.shape), levels=[0.5], colors="tab:blue", linewidths=1.2)
    z0, z1 = x[features].numpy(), result.x[features].numpy()
    ax.plot(*z0, "ko", label="original")
    ax.plot(*z1, "b*", ms=11, label=f"correction (L1 {result.distance:.3f})")
    ax.annotate("", z1, z0, arrowprops={"arrowstyle": "->"})
    ax.add_patch(Rectangle(z1 - radius, 2 * radius, 2 * radius, fill=False, ec="b", ls="--"))
    ax.set(
        xlabel=f"{FEATURES[0]} (scaled)",
        ylabel=f"{FEATURES[1]} (scaled)",
        title=f"to '{classes[target]}': {result.num_regions} activation regions (hatched)",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8, loc="upper right")
    atomic_write_figure(out / "tabular_region.png", fig)


# --- images -------------------------------------------------------------------------------------

IMAGE_REGIONS = 30  # activation regions per image (each LP has ~1,000 rows over 20 pixels)


def images(
    model: nn.Module,
    info: dict[str, Any],
    source: str,
    pixels: torch.Tensor,
    out: Path,
    stamp: dict,
    first: int = 0,
    radius: float = 0.002,
) -> dict:
    """Corrections of the test images ``pixels`` (uint8, N×1×H×W; the first is test image
    ``first``) into ``images_FIRST-LAST.json``."""
    model = model.double().eval()
    mean, std = info["data"]["mean"][0], info["data"]["std"][0]
    n, width = len(pixels), pixels.shape[-1]
    inputs = [(p.double() / 255.0 - mean) / std for p in pixels]
    with torch.no_grad():
        logits = model(torch.stack(inputs))
    targets = logits.argsort(1, descending=True)[:, 1].tolist()
    patches = [salient_patch(model, x, t) for x, t in zip(inputs, targets, strict=True)]
    features = [
        [(r + a) * width + c + b for a in range(h) for b in range(w)] for r, c, h, w in patches
    ]
    lo, hi = (0 - mean) / std, (1 - mean) / std
    rows = correct_many(
        model,
        inputs,
        targets,
        lambda i: features[i],
        lambda i: np.full(20, lo),
        lambda i: np.full(20, hi),
        lambda i: radius / std,
        IMAGE_REGIONS,
    )
    for row, patch in zip(rows, patches, strict=True):
        row["input"] += first
        row["patch"] = list(patch)
    path = out / f"images_{first}-{first + n - 1}.json"
    summary = {
        "model": source,
        "inputs": f"Fashion-MNIST test images {first}-{first + n - 1}, target = runner-up class",
        "radius_pixels": radius,
        "max_regions": IMAGE_REGIONS,
        **stamp,
        **summarize(rows),
    }
    atomic_write_json(path, {"summary": summary, "rows": rows})
    return summary


def merge_images(out: Path) -> dict:
    """Pool the chunks written by ``images`` into images.json."""
    chunks = [json.loads(p.read_text()) for p in sorted(out.glob("images_*-*.json"))]
    rows = sorted((r for c in chunks for r in c["rows"]), key=lambda r: r["input"])
    first = chunks[0]["summary"]
    keep = ("model", "radius_pixels", "max_regions")
    summary = {
        **{k: first[k] for k in keep},
        "runs": [
            {k: c["summary"][k] for k in ("inputs", "date", "threads", "gemm_gflops")}
            for c in chunks
        ],
        **summarize(rows),
    }
    atomic_write_json(out / "images.json", {"summary": summary, "rows": rows})
    return summary
