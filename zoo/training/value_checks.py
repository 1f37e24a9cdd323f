"""Predicates for values from the command line: whole numbers, numbers in a range, probabilities,
split sizes and batch limits (``True`` when the value is valid). Used by the checks of a composed
config (:mod:`zoo.tasks.config_checks`) and by the classifier's own arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def whole(minimum: int) -> Callable[[Any], bool]:
    return lambda v: is_int(v) and v >= minimum


def number(minimum: float, *, strict: bool = False, maximum: float | None = None):
    def ok(v: Any) -> bool:
        if not is_number(v) or v != v:
            return False
        above = v > minimum if strict else v >= minimum
        return above and (maximum is None or v <= maximum)

    return ok


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def probability(v: Any) -> bool:
    """A dropout-like probability: in [0, 1)."""
    return is_number(v) and 0 <= v < 1


def split_size(v: Any) -> bool:
    """``data.val_size``: a count >= 0 or a fraction in [0, 1)."""
    return (is_int(v) and v >= 0) or (isinstance(v, float) and 0.0 <= v < 1.0)


def batch_limit(v: Any) -> bool:
    """Lightning's ``limit_*_batches``: a count >= 0 or a fraction in [0, 1]."""
    return v is None or (is_int(v) and v >= 0) or (is_number(v) and 0.0 <= v <= 1.0)
