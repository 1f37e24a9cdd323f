"""``python evaluate.py task=benchmark models=[resnet18,...] against=torchvision|timm``: each zoo
model against the reference implementation of the same architecture, side by side in one process
(:mod:`zoo.bench.reference`), in ``benchmark.json`` and ``benchmark.md``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from zoo.bench.reference import MD_COLUMNS, benchmark, machine
from zoo.errors import UserError
from zoo.evaluation.tables import markdown_table
from zoo.io import atomic_write_json, atomic_write_text


def run(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.models:
        raise UserError("task=benchmark needs models=[name,...] (e.g. models=[resnet18])")
    against = cfg.against or "torchvision"
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    task = cfg.task
    size = tuple(int(v) for v in task.input_size)
    if len(size) != 3:
        raise UserError(f"task.input_size={list(size)}: give [channels, height, width]")
    rows = benchmark(
        list(cfg.models),
        against,
        list(task.variants),
        size,  # type: ignore[arg-type]
        int(task.batch),
        int(task.num_classes),
        int(task.warmup),
        int(task.repeats),
        device=cfg.device,
        memory=bool(task.memory),
    )
    device = "cuda" if cfg.device == "cuda" else "cpu"
    header = (
        f"### {against}, input {'×'.join(map(str, size))}, batch {task.batch}, fp32, "
        f"{torch.get_num_threads()} threads, {machine()} ({device}), {time.strftime('%Y-%m-%d')}"
    )
    result = {
        "against": against,
        "device": device,
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": OmegaConf.to_container(task, resolve=True),
        "rows": rows,
    }
    out = Path(cfg.output_dir)
    atomic_write_json(out / "benchmark.json", result)
    markdown = markdown_table(rows, MD_COLUMNS, header, missing="–")
    atomic_write_text(out / "benchmark.md", markdown)
    print(markdown)
    return result
