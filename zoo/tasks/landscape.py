"""``python evaluate.py task=landscape ckpt_path=PATH [task.dim=1|2] [task.ckpt_b=PATH]
[task.repeats=3]``: the loss landscape of one checkpoint (:mod:`zoo.analysis.landscape`, Li et al.
2018) along filter-normalized random directions, or along the line to a second checkpoint;
``landscape.json``, ``landscape.npz`` (resumed when rerun with the same ``output_dir``) and the
figures. ``task.repeats`` draws the directions again and reports the spread."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from zoo.analysis import landscape
from zoo.errors import UserError
from zoo.io import atomic_write_json
from zoo.tasks.common import load_checkpoint_and_data
from zoo.weights.checkpoint import model_from_checkpoint


def run(cfg: DictConfig) -> dict[str, Any]:
    task = cfg.task
    model, info, dm = load_checkpoint_and_data(cfg, "landscape", "fit")
    batches = landscape.fixed_batches(dm, task.num_images, split=task.split)
    out = Path(cfg.output_dir)
    grid = landscape.parse_grid(task.grid)
    repeats = int(task.repeats)
    if repeats < 1:
        raise UserError(f"task.repeats={repeats}: need at least 1")
    if task.ckpt_b:
        other, _ = model_from_checkpoint(task.ckpt_b)
        draws = [[landscape.direction_between(model.state_dict(), other.state_dict())]]
        kinds = [{"kind": "interpolation", "ckpt_b": str(task.ckpt_b)}]
        repeats = 1  # the line between two checkpoints is not random
    else:
        dim = int(task.dim)
        if dim not in (1, 2):
            raise UserError(f"task.dim={task.dim}: use 1 or 2")
        draws, kinds = [], []
        for r in range(repeats):  # repeat r draws direction i with seed + dim * r + i
            first = int(task.seed) + dim * r
            draws.append(
                [
                    landscape.random_direction(
                        model, task.norm, task.ignore, first + i, task.dir_type
                    )
                    for i in range(dim)
                ]
            )
            kind = {"kind": "random", "norm": task.norm, "ignore": task.ignore, "seed": first}
            kinds.append(kind)
    common = {
        "checkpoint": str(cfg.ckpt_path),
        "num_images": len(torch.cat([y for _, y in batches])),
        "split": task.split,
        "dir_type": task.dir_type,
    }
    origin = tuple(int(np.argmin(np.abs(grid))) for _ in draws[0])  # the grid point nearest θ
    surfaces, per_draw, files = [], [], []
    for r, (directions, kind) in enumerate(zip(draws, kinds, strict=True)):
        meta = {**common, **kind}
        path = out / ("landscape.npz" if r == 0 else f"landscape_repeat{r}.npz")
        result = landscape.surface(model, batches, directions, [grid] * len(directions), path, meta)
        seeds = [kind["seed"] + i for i in range(len(directions))] if "seed" in kind else None
        if r == 0:
            title = f"direction seeds {seeds}" if seeds else f"line to {task.ckpt_b}"
            files += map(str, landscape.plot(result, out, bool(task.log_scale), title))
        files.append(str(path))
        surfaces.append(result["loss"])
        per_draw.append(
            {
                "direction_seeds": seeds,
                "loss_min": float(np.nanmin(result["loss"])),
                "loss_max": float(np.nanmax(result["loss"])),
                "loss_mean": float(np.nanmean(result["loss"])),
                "loss_at_origin": float(result["loss"][origin]),
            }
        )
    summary = {
        "model": info["model"],
        **common,
        **kinds[0],
        "grid": str(task.grid),
        **per_draw[0],
        "files": files,
    }
    if repeats > 1:
        seeds = [d["direction_seeds"] for d in per_draw]
        files.append(
            str(landscape.plot_spread(surfaces, grid, seeds, out / "landscape_spread.png"))
        )
        summary["repeats"] = per_draw
        summary["spread"] = {
            key: {
                "mean": float(np.mean([d[key] for d in per_draw])),
                "std": float(np.std([d[key] for d in per_draw], ddof=1)),
            }
            for key in ("loss_max", "loss_mean")
        }
    atomic_write_json(out / "landscape.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "repeats"}, indent=2))
    return summary
