"""``python evaluate.py task=hessian ckpt_path=PATH [task.k=3] [task.num_images=1000]``: the
Hessian of one checkpoint's training loss (:mod:`zoo.analysis.hessian`, Yao et al. 2018): top
eigenvalues, the trace (Hutchinson, until its standard error is small enough), the spectral
density (SLQ, with its spread over random starts) and the loss along the top eigenvector, in
``hessian.json`` with two figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from zoo.analysis import hessian
from zoo.analysis.landscape import fixed_batches
from zoo.errors import UserError
from zoo.evaluation.uncertainty import mean_stderr
from zoo.io import atomic_write_json
from zoo.tasks.common import load_checkpoint_and_data


def run(cfg: DictConfig) -> dict[str, Any]:
    task = cfg.task
    counts = {k: int(task[k]) for k in ("k", "max_iter", "trace_max_iter", "slq_runs")}
    if min(counts.values()) < 1 or int(task.min_probes) < 2 or float(task.rtol) <= 0:
        raise UserError(
            f"task settings {counts} must be >= 1, task.min_probes={task.min_probes} >= 2 and "
            f"task.rtol={task.rtol} > 0"
        )
    model, info, dm = load_checkpoint_and_data(cfg, "hessian", "fit")
    batches = fixed_batches(dm, task.num_images, int(task.batch_size), split=task.split)
    criterion = F.cross_entropy
    seed = int(cfg.seed)
    eigenvalues, eigenvectors = hessian.top_eigenvalues(
        model, criterion, batches, int(task.k), int(task.max_iter), float(task.tol), seed
    )
    probes = hessian.trace_samples(
        model,
        criterion,
        batches,
        int(task.trace_max_iter),
        float(task.rtol),
        int(task.min_probes),
        seed,
    )
    tr, tr_stderr = mean_stderr(probes)
    runs = hessian.lanczos_runs(
        model, criterion, batches, int(task.lanczos_iter), int(task.slq_runs), seed
    )
    dim = sum(p.numel() for p in hessian.trainable_params(model))
    spread = hessian.slq_spread(runs, dim)
    epsilons = torch.linspace(-task.eps_range, task.eps_range, 41).tolist()
    along = hessian.loss_along(model, criterion, batches, eigenvectors[0], epsilons)
    settings = ("k", "max_iter", "tol", "trace_max_iter", "rtol", "min_probes")
    result = {
        "model": info["model"],
        "checkpoint": str(cfg.ckpt_path),
        "num_images": sum(len(y) for _, y in batches),
        "seed": seed,
        "top_eigenvalues": eigenvalues,
        "trace": {
            "mean": tr,
            "stderr": tr_stderr,
            "probes": len(probes),
            "reached_rtol": tr_stderr <= float(task.rtol) * abs(tr),
        },
        "density": {
            "runs": [{"nodes": n, "weights": w} for n, w in runs],
            "spread": spread,
        },
        "loss_along_top_eigenvector": {"epsilon": epsilons, "loss": along},
        "settings": {k: task[k] for k in (*settings, "lanczos_iter", "slq_runs", "split")},
    }
    out = Path(cfg.output_dir)
    atomic_write_json(out / "hessian.json", result)
    hessian.plot_loss_along(epsilons, along, eigenvalues[0], out / "loss_along_top_eigenvector.png")
    hessian.plot_density(runs, out / "density.png")
    flag = "" if result["trace"]["reached_rtol"] else f" (max {task.trace_max_iter} probes reached)"
    slq = spread["trace"]
    print(
        f"top eigenvalues {[round(e, 4) for e in eigenvalues]}\n"
        f"trace (Hutchinson) {tr:.4g} ± {tr_stderr:.2g} (s.e., {len(probes)} probes){flag}\n"
        f"trace (SLQ) {slq['mean']:.4g} ± {slq['stderr']:.2g} (s.e., {len(runs)} starts); "
        f"written {out / 'hessian.json'}"
    )
    return result
