"""One run's time-to-accuracy curve as a Markdown table: the curves of docs/performance.md.

``python -m zoo.tools.curve_table RUN_DIR [--write DOC --marker NAME]`` reads the test curve that
``callbacks.test_curve=true`` records (test top-1 after every epoch, with the training clock's
seconds): from ``results.json`` once the run has finished, otherwise from the newest
``checkpoints/last.ckpt``, so a schedule still in progress shows how far it has come. ``--write``
replaces the table between ``<!-- NAME:begin/end -->`` in ``DOC``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from zoo.io import write_marked_block


def read_curve(run_dir: Path) -> tuple[list[dict[str, Any]], bool]:
    """``(curve, finished)``: the run's test curve and whether it comes from ``results.json``."""
    results, last = run_dir / "results.json", run_dir / "checkpoints" / "last.ckpt"
    if results.is_file():
        curve, finished = json.loads(results.read_text()).get("test_curve"), True
    elif last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=True).get("callbacks", {})
        curve, finished = state.get("TestCurve", {}).get("curve"), False
    else:
        raise SystemExit(f"{run_dir} holds neither results.json nor checkpoints/last.ckpt")
    if curve is None or (finished and not curve):
        raise SystemExit(f"{run_dir} has no test curve: train with callbacks.test_curve=true")
    return curve, finished


def markdown_table(curve: list[dict[str, Any]], finished: bool) -> str:
    if not curve:
        return "(in progress: no epoch has finished yet)"
    rows = ["| epoch | training seconds | test top-1 (%) |", "|---:|---:|---:|"]
    rows += [f"| {p['epoch']} | {p['seconds']:,.0f} | {100 * p['test_acc1']:.2f} |" for p in curve]
    if not finished:
        epoch = curve[-1]["epoch"]
        rows.append(f"\n(in progress: the run's newest checkpoint, after epoch {epoch})")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--write", type=Path, default=None, help="replace the doc's table")
    parser.add_argument("--marker", default="curve", help="the doc's block name")
    args = parser.parse_args(argv)
    table = markdown_table(*read_curve(args.run_dir))
    if args.write:
        write_marked_block(args.write, args.marker, table)
    print(table)


if __name__ == "__main__":
    main()
