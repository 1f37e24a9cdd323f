"""The shortcut experiment (Li et al. 2018, Sec. 5, Fig. 5): ResNets and their no-shortcut twins.

``python train.py experiment=shortcut_landscape`` trains every model of ``study.models`` with the
composed training config (one run directory per model under the study's output directory; a model
whose ``results.json`` exists is not retrained), then on a fixed subset of the training images
computes a 2D filter-normalized loss surface (resumable), the top Hessian eigenvalue and the
Hessian trace of each best checkpoint. Writes ``shortcut_table.md``/``.json`` (depth, shortcut,
test error, λ_max, trace) and ``shortcut_landscape.png`` (the contours side by side).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf, open_dict

from zoo.analysis import hessian, landscape
from zoo.errors import UserError
from zoo.io import atomic_write_figure, atomic_write_json, atomic_write_text, pyplot
from zoo.paths import CONF_DIR
from zoo.tasks import train
from zoo.tasks.common import build_datamodule
from zoo.weights.checkpoint import model_from_checkpoint

CONF_MODEL = CONF_DIR / "model"


def _model_cfg(name: str) -> DictConfig:
    path = CONF_MODEL / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"study.models: no config conf/model/{name}.yaml for {name!r}")
    return OmegaConf.load(path)


def _train_one(cfg: DictConfig, name: str, out: Path) -> dict[str, Any]:
    results_file = out / "results.json"
    if results_file.is_file():
        return json.loads(results_file.read_text())
    sub = copy.deepcopy(cfg)
    with open_dict(sub):
        del sub["study"]
        sub.model = _model_cfg(name)
        sub.output_dir = str(out)
        if (out / "checkpoints" / "last.ckpt").is_file():
            sub.ckpt_path = "last"  # an interrupted training run resumes
    train.run(sub)
    return json.loads(results_file.read_text())


def analyse(cfg: DictConfig, results: dict[str, Any], out: Path, dm) -> dict[str, Any]:
    study = cfg.study
    model, _ = model_from_checkpoint(results["best_checkpoint"])
    batches = landscape.fixed_batches(dm, study.num_images)
    grid = landscape.parse_grid(study.grid)
    directions = [landscape.random_direction(model, seed=int(study.seed) + i) for i in range(2)]
    meta = {"checkpoint": results["best_checkpoint"], "num_images": int(study.num_images)}
    surface = landscape.surface(
        model, batches, directions, [grid, grid], out / "landscape.npz", meta
    )
    landscape.plot(surface, out)
    h_batches = landscape.fixed_batches(dm, study.hessian_images, batch_size=100)
    steps = int(study.hessian_iter)
    top, _ = hessian.top_eigenvalues(model, F.cross_entropy, h_batches, 1, steps, tol=1e-2)
    tr = hessian.trace(model, F.cross_entropy, h_batches, max_iter=steps, rtol=1e-2)
    depth = int(re.search(r"\d+", results["model"]).group())
    return {
        "model": results["model"],
        "depth": depth,
        "shortcut": "noshort" not in results["model"],
        "test_error": 100 * (1 - results["test_acc1"]),
        "epochs": results["epochs"],
        "train_images": results["data"]["train"],
        "train_wall_s": results["wall_time_s"],
        "lambda_max": top[0],
        "trace": tr,
        "surface": surface,
    }


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    out = Path(cfg.output_dir)
    rows = []
    for name in cfg.study.models:
        results = _train_one(cfg, name, out / name)
        dm = build_datamodule(cfg.data, "fit", seed=cfg.seed)
        rows.append(analyse(cfg, results, out / name, dm))
    table = [{k: v for k, v in r.items() if k != "surface"} for r in rows]
    atomic_write_json(out / "shortcut_table.json", table)
    lines = [
        "| model | depth | shortcut | epochs | train images | test error (%) | λ_max | trace |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['depth']} | {'yes' if r['shortcut'] else 'no'} | {r['epochs']} | "
        f"{r['train_images']:,} | {r['test_error']:.2f} | {r['lambda_max']:.3g} | "
        f"{r['trace']:.4g} |"
        for r in table
    ]
    atomic_write_text(out / "shortcut_table.md", "\n".join(lines) + "\n")
    _figure(rows, out / "shortcut_landscape.png")
    print("\n".join(lines))
    return table


def _figure(rows: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()

    cols = 2 if len(rows) > 1 else 1
    n_rows = (len(rows) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.2 * cols, 4 * n_rows), squeeze=False)
    for ax, r in zip(axes.flat, rows, strict=False):
        s = r["surface"]
        x, y = np.meshgrid(s["axis0"], s["axis1"], indexing="ij")
        levels = np.linspace(np.nanmin(s["loss"]), min(np.nanmax(s["loss"]), 10.0), 25)
        drawn = ax.contour(x, y, s["loss"], levels=levels, cmap="viridis")
        ax.clabel(drawn, inline=True, fontsize=6, fmt="%.2g")
        ax.set(title=f"{r['model']} ({r['test_error']:.1f}% err)", aspect="equal")
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    fig.tight_layout()
    atomic_write_figure(path, fig)
