"""Timing: the median of repeated calls, alternating rounds for side-by-side comparisons, one
training step (forward, cross-entropy, backward, SGD step) and the machine's GEMM rate."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.base import main_output
from zoo.models.fast import to_fast_input


def time_alternating(
    steps: Sequence[Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    device: torch.device | None = None,
) -> list[float]:
    """Median wall seconds per call of each of ``steps``, after ``warmup`` untimed calls of each
    (the first calls pay for allocations, kernel selection and thread-pool start-up).

    The steps take turns in every round, in reverse order every other round, so that drifts in the
    machine's load hit all of them alike. On a CUDA ``device`` each call is synchronised.
    """

    def sync() -> None:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    for step in steps:
        for _ in range(warmup):
            step()
    times: list[list[float]] = [[] for _ in steps]
    for r in range(repeats):
        order = range(len(steps)) if r % 2 == 0 else reversed(range(len(steps)))
        for i in order:
            sync()
            start = time.perf_counter()
            steps[i]()
            sync()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def median_seconds(step: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``step()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    return time_alternating([step], repeats, warmup)[0]


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matrix-product rate now (GFLOP/s, current thread count): the yardstick
    published beside every absolute time, since the shared CPU's speed varies between days."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_seconds(lambda: torch.mm(a, b), repeats) / 1e9


class TrainingStep:
    """One model's training step (forward, cross-entropy, backward, SGD with momentum) and its
    inference on a fixed batch, ready to be timed.

    ``channels_last`` feeds the batch in channels_last memory format (for models converted with
    :func:`zoo.models.fast.optimize` or ``.to(memory_format=torch.channels_last)``); ``compile``
    runs the model through ``torch.compile``.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        channels_last: bool = False,
        compile: bool = False,
        lr: float = 1e-3,
    ) -> None:
        self.model = model
        self.x = to_fast_input(x) if channels_last else x
        self.y = y
        self.forward = torch.compile(model) if compile else model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    def train_step(self) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(main_output(self.forward(self.x)), self.y).backward()
        self.optimizer.step()

    def infer(self) -> None:
        self.model.eval()
        with torch.inference_mode():
            self.forward(self.x)
