"""``python evaluate.py task=compare models=[lenet5,resnet20,...] [runs=[dir,...]|'runs/**']``: the
comparison table (:mod:`zoo.bench.compare`) of the models (``task.default_models`` when none
are given) at every input size of ``task.input_sizes``, with the accuracy of the training runs
found under ``runs``, written into ``output_dir``."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

import zoo
from zoo.bench.compare import build_table, collect_runs, measure, write_comparison
from zoo.errors import UserError


def run(cfg: DictConfig) -> list[dict]:
    """One table per input size; the rows of every size returned."""
    models = list(cfg.models) or list(cfg.task.default_models)
    unknown = [m for m in models if not zoo.is_model(m)]
    if unknown:
        raise UserError(f"unknown model(s) {unknown}; see zoo.list_models()")
    sizes = input_sizes(cfg.task.input_sizes)
    torch.manual_seed(0)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    runs = collect_runs(list(cfg.runs)) if cfg.runs else {}
    tables = []
    for size in sizes:
        rows = [measure(m, size, cfg.task.batch, cfg.task.repeats) for m in models]
        tables.append(build_table(rows, runs))
    print(write_comparison(tables, cfg.task.batch, Path(cfg.output_dir)))
    return [r for rows in tables for r in rows]


def input_sizes(values) -> list[tuple[int, int, int]]:
    """``task.input_sizes`` as (C, H, W) tuples; a one-line error for anything else."""
    sizes = [tuple(int(v) for v in size) for size in values]
    bad = [list(size) for size in sizes if len(size) != 3 or min(size) < 1]
    if not sizes or bad:
        raise UserError(
            f"task.input_sizes={[list(x) for x in sizes]}: give a list of [C, H, W], "
            "e.g. task.input_sizes=[[1,28,28],[3,32,32]]"
        )
    return sizes  # type: ignore[return-value]
