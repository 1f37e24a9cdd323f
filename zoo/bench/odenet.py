"""ODE-Net memory against NFE: ``python -m zoo.bench.odenet [--out docs/odenet_bench.json]``.

Writes the JSON and the table between the ``bench`` markers of ``--doc`` (docs/odenet.md).

For tolerances from 1e-1 to 1e-5, one training step of ``odenet_mnist`` (batch 32, 28×28) with the
adjoint method and with backpropagation through the solver (``adjoint=False``): forward/backward
NFE, step time and training memory, measured two ways:

- ``saved_MiB``: the bytes of every tensor autograd saves for the backward pass
  (``torch.autograd.graph.saved_tensors_hooks``): deterministic, and exactly what the adjoint method
  avoids storing. It does not see the one function evaluation the adjoint re-records at a time
  during its reverse solve.
- ``rss_step_MiB``: the peak resident memory of one step above the resident memory before it, in
  a fresh process per configuration, after a batch-of-2 warm-up step (kernels, thread pools): the
  high-water mark (``VmHWM``) is reset to the current RSS through ``/proc/self/clear_refs`` and read
  after the step. Everything the step really touched, the adjoint's reverse solve and the
  allocator's behaviour included, so it is noisier. (``ru_maxrss`` cannot be used: Linux carries
  the parent's peak over fork and exec into the child.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

import zoo
from zoo.bench.memory import saved_tensor_bytes, status_mib
from zoo.io import atomic_write_json, write_marked_block
from zoo.training.runtime import ALLOCATOR_POLICIES, configure_allocator

TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


def _model_and_input(adjoint: bool, tol: float, batch: int):
    torch.manual_seed(0)
    model = zoo.create_model("odenet_mnist", adjoint=adjoint, rtol=tol, atol=tol).train()
    return model, torch.randn(batch, 1, 28, 28)


def saved_bytes_and_nfe(adjoint: bool, tol: float, batch: int) -> dict:
    model, x = _model_and_input(adjoint, tol, batch)
    model.reset_step_stats()
    start = time.perf_counter()
    total = saved_tensor_bytes(model, x)
    return {
        "tol": tol,
        "adjoint": adjoint,
        "saved_MiB": total / 2**20,
        "step_s": time.perf_counter() - start,
        **model.step_stats(),
    }


def rss_probe(adjoint: bool, tol: float, batch: int) -> dict:
    """Run in a fresh process: resident memory before one forward + backward and its peak."""
    model, x = _model_and_input(adjoint, tol, batch)
    model(x[:2]).sum().backward()
    model.zero_grad()
    before = status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    model(x).sum().backward()
    peak = status_mib("VmHWM")
    return {"rss_before_MiB": before, "rss_peak_MiB": peak, "rss_step_MiB": peak - before}


def rss_in_subprocess(adjoint: bool, tol: float, batch: int) -> dict:
    cmd = [sys.executable, "-m", "zoo.bench.odenet", "--probe", str(tol), str(int(adjoint))]
    cmd += ["--batch", str(batch)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown_table(rows: list[dict]) -> str:
    rss = all("rss_step_MiB" in r for r in rows)
    head = ["rtol = atol", "NFE-F", "NFE-B (adjoint)", "saved, adjoint (MiB)"]
    head += ["saved, through solver (MiB)"]
    head += ["RSS, adjoint (MiB)", "RSS, through solver (MiB)"] if rss else []
    head += ["step, adjoint", "step, through solver"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for tol in sorted({r["tol"] for r in rows}, reverse=True):
        a = next(r for r in rows if r["tol"] == tol and r["adjoint"])
        b = next(r for r in rows if r["tol"] == tol and not r["adjoint"])
        cells = [f"{tol:.0e}".replace("e-0", "e-"), str(a["nfe_forward"]), str(a["nfe_backward"])]
        cells += [f"{a['saved_MiB']:.2f}", f"{b['saved_MiB']:.1f}"]
        cells += [f"{a['rss_step_MiB']:.1f}", f"{b['rss_step_MiB']:.1f}"] if rss else []
        cells += [f"{a['step_s']:.2f} s", f"{b['step_s']:.2f} s"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ODE-Net memory vs NFE")
    parser.add_argument("--out", type=Path, default=Path("docs/odenet_bench.json"))
    parser.add_argument("--doc", type=Path, default=Path("docs/odenet.md"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--no-rss", action="store_true", help="skip the subprocess RSS probes")
    parser.add_argument("--probe", nargs=2, metavar=("TOL", "ADJOINT"), help=argparse.SUPPRESS)
    parser.add_argument("--allocator", choices=ALLOCATOR_POLICIES, default="retain")
    args = parser.parse_args(argv)
    configure_allocator(args.allocator)
    if args.probe:
        tol, adjoint = float(args.probe[0]), bool(int(args.probe[1]))
        print(json.dumps(rss_probe(adjoint, tol, args.batch)), flush=True)
        return
    rows = []
    for tol in TOLERANCES:
        for adjoint in (True, False):
            row = saved_bytes_and_nfe(adjoint, tol, args.batch)
            if not args.no_rss:
                row.update(rss_in_subprocess(adjoint, tol, args.batch))
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "model": "odenet_mnist",
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "memory": {
            "saved_MiB": "bytes of the tensors autograd saves for backward (saved_tensors_hooks)",
            "rss_step_MiB": "VmHWM during one step (reset via /proc/self/clear_refs) minus VmRSS "
            "before it, after a batch-2 warm-up step, one fresh process per configuration",
        },
        "rows": rows,
    }
    atomic_write_json(args.out, result)
    write_marked_block(args.doc, "bench", markdown_table(rows))


if __name__ == "__main__":
    main()
