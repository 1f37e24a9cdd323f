"""ODE-Net memory against NFE: ``python -m zoo.bench.odenet [--out docs/odenet_bench.json]``.

For tolerances from 1e-1 to 1e-5, one training step of ``odenet_mnist`` (batch 32, 28×28) with the
adjoint method and with backpropagation through the solver (``adjoint=False``): forward/backward
NFE, step time, and training memory measured as the bytes of every tensor autograd saves for the
backward pass (``torch.autograd.graph.saved_tensors_hooks``; deterministic — it is exactly what the
adjoint method avoids storing).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import zoo
from zoo.bench import saved_tensor_bytes
from zoo.io import atomic_write_json

TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


def saved_bytes_and_nfe(adjoint: bool, tol: float, batch: int) -> dict:
    torch.manual_seed(0)
    model = zoo.create_model("odenet_mnist", adjoint=adjoint, rtol=tol, atol=tol).train()
    x = torch.randn(batch, 1, 28, 28)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ODE-Net memory vs NFE")
    parser.add_argument("--out", type=Path, default=Path("docs/odenet_bench.json"))
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    rows = []
    for tol in TOLERANCES:
        for adjoint in (True, False):
            row = saved_bytes_and_nfe(adjoint, tol, args.batch)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "model": "odenet_mnist",
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
