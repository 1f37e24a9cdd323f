"""Measurement helpers shared by the comparison, the benchmarks and the analyses: step timing,
the bytes autograd saves for backward, the peak of the tensor memory a step allocates, and the
process's memory from ``/proc/self/status``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def median_seconds(step: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``step()`` over ``repeats`` calls after ``warmup`` untimed calls
    (the first calls pay for allocations, kernel selection and thread-pool start-up)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matrix-product rate now (GFLOP/s, current thread count): the yardstick
    published beside every absolute time, since the shared CPU's speed varies between days."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_seconds(lambda: torch.mm(a, b), repeats) / 1e9


def saved_tensor_bytes(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in ``module(x)``.

    Deterministic, and exactly the training memory that recomputation (checkpointing) or the
    adjoint method removes. Runs the backward pass too (on ``module(x).sum()``).
    """
    seen: set[int] = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    out.sum().backward()
    return total


def peak_allocated_bytes(step: Callable[[], object]) -> int:
    """The peak, over ``step()``, of the CPU tensor memory allocated since it started and not
    yet freed: activations kept for backward, temporaries and gradients alike.

    Read from the allocator's own records (``torch.profiler`` with ``profile_memory``): the same
    for the same step, whatever else the machine runs; unlike ``saved_tensor_bytes`` it also
    sees what gradient checkpointing keeps (each segment's input) and recomputes (its
    activations, alive during that segment's backward only).
    """
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()  # negative for a free
        peak = max(peak, live)
    return peak


def status_mib(field: str) -> float:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, …) in MiB (Linux only)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status (the RSS probe needs Linux)")
