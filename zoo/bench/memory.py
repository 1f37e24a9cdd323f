"""Memory of a training step: the bytes autograd saves for backward, the peak of the tensor memory a
step allocates, and the process's memory from ``/proc/self/status``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch


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
