"""Runs repeated over seeds, side by side: the time-to-accuracy and ablation tables of the docs.

``python -m zoo.tools.seed_table RUNS_DIR [--time-to 93 94] [--write DOC --marker NAME]`` reads
every finished run under ``RUNS_DIR`` (``results.json`` written by ``train.py``, in the run folder
``VARIANT-seedN`` or copied to ``VARIANT-seedN.json``), groups them by ``VARIANT`` and prints a
Markdown table, one row per variant in the order of their first run: test top-1 (mean ± sample
std over seeds), the mean training seconds until the test curve first reached each accuracy (with
how many seeds reached it), epochs and images seen.
``--write`` replaces the table between ``<!-- NAME:begin/end -->`` in ``DOC``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Any

from zoo.io import write_marked_block

SEED_SUFFIX = re.compile(r"-seed\d+$")


def run_name(results_file: Path) -> str:
    """``VARIANT-seedN`` of ``VARIANT-seedN/results.json`` or of its copy ``VARIANT-seedN.json``."""
    return results_file.parent.name if results_file.name == "results.json" else results_file.stem


def collect(runs_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """``{variant: [results.json, ...]}`` of the finished runs under ``runs_dir``: run folders, or
    the copies of their ``results.json`` that the docs keep (``VARIANT-seedN.json``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    # A run whose folder and copy are both present counts once (the copy is the folder's file).
    by_run = {run_name(f): f for f in [*runs_dir.glob("*.json"), *runs_dir.glob("*/results.json")]}
    for _, results_file in sorted(by_run.items()):
        results = json.loads(results_file.read_text())
        if results.get("test_acc1") is None:
            continue
        variant = SEED_SUFFIX.sub("", run_name(results_file))
        groups.setdefault(variant, []).append(results)
    return groups


def mean_std(values: list[float], digits: int = 2) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def time_to(runs: list[dict[str, Any]], percent: float) -> str:
    """Mean seconds until the test curve first reached ``percent``, over the seeds that did."""
    reached = [
        next(p["seconds"] for p in r["test_curve"] if 100 * p["test_acc1"] >= percent)
        for r in runs
        if any(100 * p["test_acc1"] >= percent for p in r.get("test_curve", []))
    ]
    if not reached:
        return "—"
    return f"{statistics.mean(reached):.0f} ({len(reached)}/{len(runs)})"


def markdown_table(groups: dict[str, list[dict[str, Any]]], percents: list[float]) -> str:
    if not groups:
        raise SystemExit("no finished runs (results.json) found")
    reach = "".join(f" time to {p:g} % (s) |" for p in percents)
    rows = [
        f"| variant | seeds | test top-1 (%) |{reach} epochs | images seen |",
        "|---|---:|---:|" + "---:|" * len(percents) + "---:|---:|",
    ]
    for variant, runs in groups.items():
        top1 = mean_std([100 * r["test_acc1"] for r in runs])
        times = "".join(f" {time_to(runs, p)} |" for p in percents)
        epochs = statistics.mean(float(r["epochs"]) for r in runs)
        images = statistics.mean(float(r["images_seen"]) for r in runs)
        rows.append(f"| {variant} | {len(runs)} | {top1} |{times} {epochs:.1f} | {images:,.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--time-to", type=float, nargs="*", default=[93.0, 94.0])
    parser.add_argument("--write", type=Path, default=None, help="replace the doc's table")
    parser.add_argument("--marker", default="seed-table", help="the doc's block name")
    args = parser.parse_args(argv)
    table = markdown_table(collect(args.runs_dir), args.time_to)
    if args.write:
        write_marked_block(args.write, args.marker, table)
    print(table)


if __name__ == "__main__":
    main()
