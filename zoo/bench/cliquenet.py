"""CliqueNet speed and memory: ``python -m zoo.bench.cliquenet [--out docs/cliquenet_bench.json]``.

1. Fast block (one convolution per layer update over concatenated inputs and kernels) against the
   edge loop (one convolution per edge, summed): median training-step time of one clique block.
2. ``memory_efficient=True`` against the default on cliquenet_k36_t12_ac, batch 64, 32×32: median
   training-step time and activation memory, measured as the bytes of every tensor autograd saves
   for backward (``torch.autograd.graph.saved_tensors_hooks``; deterministic, and the quantity
   recomputation trades against time). The process's peak RSS is not used: on the CPU allocator it
   moved by less than its noise here.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import zoo
from zoo.bench.memory import saved_tensor_bytes
from zoo.bench.timing import median_seconds
from zoo.io import atomic_write_json
from zoo.models.cliquenet import CliqueBlock
from zoo.training.runtime import ALLOCATOR_POLICIES, configure_allocator


class EdgeLoopCliqueBlock(CliqueBlock):
    """The same block computed edge by edge: sum_s W_si * relu(bn(X))_s (the slow reference)."""

    def _update(self, inputs, bn, weight, i, bn_b):
        act = F.relu(bn(torch.cat(inputs, 1)))
        out, offset = 0.0, 0
        for x in inputs:
            c = x.shape[1]
            out = out + F.conv2d(
                act[:, offset : offset + c],
                weight[:, offset : offset + c],
                padding=self.kernel_size // 2,
            )
            offset += c
        if bn_b is not None:
            out = F.conv2d(F.relu(bn_b(out)), self.bottleneck_convs[i].weight, padding=1)
        return out


def time_step(module: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward + backward of ``module(x)``."""

    def step() -> None:
        out = module(x)
        loss = sum(t.sum() for t in out[1]) if isinstance(out, tuple) else out.sum()
        loss.backward()

    return median_seconds(step, repeats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="CliqueNet block speed and memory")
    parser.add_argument("--out", type=Path, default=Path("docs/cliquenet_bench.json"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--allocator", choices=ALLOCATOR_POLICIES, default="retain")
    args = parser.parse_args(argv)
    configure_allocator(args.allocator)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    result: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {threads} threads",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }

    # 1. one block of cliquenet_k36_t12 (block 2: 144 input channels, 4 layers, k=36) at 16x16
    fast = CliqueBlock(144, 36, 4).train()
    loop = EdgeLoopCliqueBlock(144, 36, 4).train()
    loop.load_state_dict(fast.state_dict())
    x = torch.randn(args.batch, 144, 16, 16)
    t_fast, t_loop = [], []
    for _ in range(3):  # interleaved, so that load changes hit both alike
        t_fast.append(time_step(fast, x, args.repeats))
        t_loop.append(time_step(loop, x, args.repeats))
    result["block"] = {
        "config": f"in 144, k 36, L 4, 16x16, batch {args.batch}",
        "fast_step_s": statistics.median(t_fast),
        "edge_loop_step_s": statistics.median(t_loop),
    }
    result["block"]["speedup"] = (
        result["block"]["edge_loop_step_s"] / result["block"]["fast_step_s"]
    )

    # 2. memory-efficient mode on the whole network
    x = torch.randn(args.batch, 3, 32, 32)
    rows = {}
    for me in (False, True):
        torch.manual_seed(0)
        model = zoo.create_model("cliquenet_k36_t12_ac", memory_efficient=me).train()
        rows[me] = {
            "saved_MiB": saved_tensor_bytes(model, x) / 2**20,
            "step_s": time_step(model, x, max(2, args.repeats // 2)),
        }
    result["memory_efficient"] = {
        "model": "cliquenet_k36_t12_ac",
        "batch": args.batch,
        "input": "3x32x32",
        "default": rows[False],
        "memory_efficient": rows[True],
        "saved_reduction": 1 - rows[True]["saved_MiB"] / rows[False]["saved_MiB"],
        "time_overhead": rows[True]["step_s"] / rows[False]["step_s"] - 1,
    }
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
