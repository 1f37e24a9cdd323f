"""zoo.bench: warm-up calls are not timed, the median is taken, alternating rounds time each step,
saved bytes are counted once."""

from __future__ import annotations

import pytest
import torch

from zoo.bench import memory, timing


def test_median_seconds_skips_warmup_and_takes_the_median(monkeypatch: pytest.MonkeyPatch) -> None:
    durations = iter([100.0, 5.0, 1.0, 3.0, 2.0, 4.0])  # one slow warm-up call, then 5 timed
    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def step() -> None:
        clock[0] += next(durations)

    assert timing.median_seconds(step, repeats=5, warmup=1) == 3.0
    with pytest.raises(StopIteration):
        step()  # exactly warmup + repeats calls were made


def test_time_alternating_takes_turns_and_reverses_every_other_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def step(name: str, seconds: float):
        def run() -> None:
            calls.append(name)
            clock[0] += seconds

        return run

    medians = timing.time_alternating([step("a", 1.0), step("b", 2.0)], repeats=3, warmup=1)
    assert medians == [1.0, 2.0]
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]


def test_saved_tensor_bytes_counts_each_storage_once() -> None:
    class Square(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * x  # autograd saves x twice, one storage

    x = torch.randn(4, 8, requires_grad=True)
    linear = torch.nn.Linear(8, 3, bias=False)
    # x W^T saves x (for dW) and W (for dx): 4*8 + 3*8 floats.
    assert memory.saved_tensor_bytes(linear, x) == (4 * 8 + 3 * 8) * 4
    assert linear.weight.grad is not None  # the backward pass ran
    assert memory.saved_tensor_bytes(Square(), x) == 4 * 8 * 4


def test_peak_allocated_bytes_sees_the_largest_live_set() -> None:
    mib = 2**20

    def step() -> None:
        a = torch.empty(mib, dtype=torch.uint8)  # 1 MiB
        b = torch.empty(2 * mib, dtype=torch.uint8)  # 3 MiB live
        del a, b
        c = torch.empty(mib, dtype=torch.uint8)  # 1 MiB live: not a new peak
        del c

    peak = memory.peak_allocated_bytes(step)
    assert 3 * mib <= peak < 3 * mib + 64 * 1024  # allocator rounding at most
    assert memory.peak_allocated_bytes(step) == peak  # the same step, the same number
