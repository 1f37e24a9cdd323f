"""Standard errors, the stopping rule and Wilson intervals against published and hand values."""

from __future__ import annotations

import math

import pytest

from zoo.bench.compare import build_table
from zoo.evaluation.uncertainty import Proportion, mean_stderr, precise_enough, wilson_interval


@pytest.mark.parametrize(
    ("successes", "trials", "expected"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison of
        # seven methods", Stat. Med. 17:857-872, Table II, method 3 (score interval without
        # continuity correction), 95 %.
        (81, 263, (0.2553, 0.3662)),
        (15, 148, (0.0624, 0.1605)),
        (0, 20, (0.0, 0.1611)),
        (1, 29, (0.0061, 0.1718)),
    ],
)
def test_wilson_interval_matches_newcombes_table(successes, trials, expected) -> None:
    lo, hi = wilson_interval(successes, trials)
    assert lo == pytest.approx(expected[0], abs=1e-4)
    assert hi == pytest.approx(expected[1], abs=1e-4)


def test_wilson_interval_by_hand() -> None:
    """20 of 20 at 95 % (z = 1.959964): the lower end is n / (n + z²) = 20 / 23.841459 = 0.838875,
    the upper end 1. 5 of 10: centre 1/2 by symmetry, half-width
    z·√(0.025 + z²/400) / (1 + z²/10) = 1.959964 · 0.186020 / 1.384146 = 0.263407."""
    assert wilson_interval(20, 20) == pytest.approx((0.838875, 1.0), abs=1e-6)
    assert wilson_interval(5, 10) == pytest.approx((0.5 - 0.263407, 0.5 + 0.263407), abs=1e-6)
    lo90, hi90 = wilson_interval(5, 10, confidence=0.9)
    assert 0.5 - 0.263407 < lo90 < 0.5 < hi90 < 0.5 + 0.263407  # a narrower interval


@pytest.mark.parametrize(("successes", "trials"), [(3, 2), (-1, 5), (0, 0)])
def test_wilson_interval_refuses_impossible_counts(successes: int, trials: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(successes, trials)


def test_proportion() -> None:
    p = Proportion(771, 1000)
    assert p.value == 0.771 and p.interval() == wilson_interval(771, 1000)
    assert p.to_dict()["ci95"] == list(p.interval())


def test_mean_stderr_and_stopping_rule() -> None:
    mean, stderr = mean_stderr([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and stderr == pytest.approx(math.sqrt(5 / 3) / 2)  # s² = 5/3, n = 4
    assert math.isnan(mean_stderr([1.0])[1])
    noisy = [1.0, 3.0] * 20  # mean 2, s.e. ≈ 0.16: 8 % of the mean
    assert precise_enough(noisy, rtol=0.1, min_samples=30)
    assert not precise_enough(noisy, rtol=0.05, min_samples=30)
    assert not precise_enough(noisy, rtol=0.1, min_samples=41)


def test_compare_table_gives_the_wilson_interval_of_the_test_accuracy() -> None:
    run = {"test_acc1": 0.9, "dataset": "fashion_mnist", "epochs": 10, "wall_time_s": 60.0}
    rows = build_table(
        [{"model": "lenet5"}, {"model": "resnet20"}],
        {
            ("lenet5", "fashion_mnist", "10 epochs"): [{**run, "data": {"test": 10_000}}],
            ("resnet20", "fashion_mnist", "10 epochs"): [run],  # no test-set size: no interval
        },
    )
    lo, hi = wilson_interval(9_000, 10_000)
    assert rows[0]["top-1 95% CI (%)"] == f"{100 * lo:.2f}-{100 * hi:.2f}" == "89.40-90.57"
    assert "top-1 95% CI (%)" not in rows[1]
