"""Linear decay against step decay under a time budget (Li, Yumer & Ramanan, ICLR 2020, §3-4).

``python -m zoo.tools.budget_schedules RUNS_DIR [--write docs/training.md]`` reads every run under
``RUNS_DIR`` (``config.yaml`` + ``results.json`` written by ``train.py``), groups them by schedule
and budget, and prints a Markdown table of test top-1 (mean ± std over seeds), epochs and images
seen; ``--write`` replaces the table between ``<!-- budget-schedules:begin/end -->`` in a doc.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from zoo.io import write_marked_block
from zoo.tools.seed_table import mean_std


def collect(runs_dir: Path) -> dict[tuple[str, float], list[dict[str, Any]]]:
    """``{(schedule, budget_s): [results.json, ...]}`` of the finished runs under ``runs_dir``."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for results_file in sorted(runs_dir.glob("*/results.json")):
        cfg = OmegaConf.load(results_file.parent / "config.yaml")
        results = json.loads(results_file.read_text())
        if results.get("test_acc1") is None or results.get("budget_s") is None:
            continue
        schedule = str(cfg.scheduler["_target_"]).rsplit(".", 1)[-1]
        groups[(schedule, float(results["budget_s"]))].append(results)
    return dict(groups)


def markdown_table(groups: dict[tuple[str, float], list[dict[str, Any]]]) -> str:
    if not groups:
        raise SystemExit("no finished budgeted runs (config.yaml + results.json) found")
    rows = [
        "| budget | schedule | seeds | test top-1 (%) | epochs | images seen |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for (schedule, budget), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        top1 = [100 * r["test_acc1"] for r in runs]
        epochs = statistics.mean(float(r["epochs"]) for r in runs)
        images = statistics.mean(float(r["images_seen"]) for r in runs)
        rows.append(
            f"| {budget:g} s | {schedule} | {len(runs)} | {mean_std(top1)} | {epochs:.1f} "
            f"| {images:,.0f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--write", type=Path, default=None, help="replace the doc's table")
    args = parser.parse_args(argv)
    table = markdown_table(collect(args.runs_dir))
    if args.write:
        write_marked_block(args.write, "budget-schedules", table)
    print(table)


if __name__ == "__main__":
    main()
