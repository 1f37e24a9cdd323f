"""``python evaluate.py task=corrections ckpt_path=PATH [task.index=0] [task.target=7]
[task.patch=[row,col,height,width]]``: the minimal stable correction of one test image
(:mod:`zoo.analysis.corrections`, Zhang et al. 2018) over a patch of pixels, in pixel units, with
its region of linear constraints, in ``corrections.json`` and ``corrections.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from zoo.analysis.corrections import correct_patch, plot_correction, salient_patch
from zoo.errors import UserError
from zoo.io import atomic_write_json
from zoo.tasks.common import load_checkpoint_and_data


def run(cfg: DictConfig) -> dict[str, Any]:
    task = cfg.task
    model, info, dm = load_checkpoint_and_data(cfg, "corrections", "test")
    index = int(task.index)
    if not 0 <= index < len(dm.test_y):
        raise UserError(f"task.index={index}: the test split has {len(dm.test_y)} images")
    pixels = dm.test_x[index].double() / 255  # (C, H, W) in [0, 1]
    c, h, w = pixels.shape
    mean = torch.as_tensor(dm.mean, dtype=torch.float64).view(c, 1, 1)
    std = torch.as_tensor(dm.std, dtype=torch.float64).view(c, 1, 1)
    x = (pixels - mean) / std
    with torch.no_grad():
        logits = model.double()(x[None])[0]
    predicted = int(logits.argmax())
    target = int(logits.argsort(descending=True)[1]) if task.target is None else int(task.target)
    if not 0 <= target < len(logits):
        raise UserError(f"task.target={task.target}: the model has classes 0..{len(logits) - 1}")
    if target == predicted:
        raise UserError(f"test image {index} is already classified as {target}; choose another")
    if task.patch is None:
        row, col, ph, pw = salient_patch(model, x, target)
    else:
        if len(task.patch) != 4:
            raise UserError(f"task.patch={list(task.patch)}: give [row, col, height, width]")
        row, col, ph, pw = (int(v) for v in task.patch)
    if not (0 <= row and 0 <= col and ph > 0 and pw > 0 and row + ph <= h and col + pw <= w):
        raise UserError(f"task.patch={[row, col, ph, pw]} does not fit in a {h}x{w} image")
    if c * ph * pw > int(task.max_pixels):
        raise UserError(
            f"task.patch of {c * ph * pw} values: at most task.max_pixels={task.max_pixels} "
            "(the LP grows with every free pixel)"
        )
    patch = (row, col, ph, pw)
    result, described, corrected = correct_patch(
        model, x, mean, std, target, patch, float(task.radius), int(task.max_regions)
    )
    summary = {
        "model": info["model"],
        "checkpoint": str(cfg.ckpt_path),
        "index": index,
        "label": int(dm.test_y[index]),
        "predicted": predicted,
        "target": target,
        "patch": list(patch),
        "radius_pixels": float(task.radius),
        **described,
    }
    out = Path(cfg.output_dir)
    if corrected is not None:
        plot_correction(pixels, corrected, patch, summary, out / "corrections.png")
    atomic_write_json(out / "corrections.json", summary)
    if result.found:
        proof = ", minimal: certified" if result.certified else ""
        print(
            f"image {index}: class {predicted} -> {target} by changing {c * ph * pw} pixels "
            f"(patch {list(patch)}), L1 {result.distance:.4f} in pixel units, "
            f"{'stable' if result.stable else 'not stable'} for radius {task.radius}; region of "
            f"{len(result.b)} constraints uniting {result.num_regions} activation regions "
            f"({result.regions_explored} examined{proof}); "
            f"{summary['seconds']:.2f} s; written {out / 'corrections.json'}"
        )
    else:
        print(
            f"image {index}: no correction to class {target} within the {result.regions_explored} "
            f"activation regions examined{' (none exists)' if result.certified else ''}"
        )
    return summary
