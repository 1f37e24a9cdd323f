"""Process set-up for CPU work: torch threads and the C allocator's policy.

glibc's ``malloc`` serves every block above ``M_MMAP_THRESHOLD`` (at most 32 MiB) with a fresh
``mmap`` and returns it to the kernel on ``free``. A training step allocates and frees the same
large activations every time, so each step pays millions of page faults and re-zeroes every page:
cliquenet_k36_t12_ac at batch 128 on 28×28 spent 40 % of its time in the kernel
(docs/performance.md). The ``retain`` policy tells glibc (``mallopt``) to serve large blocks from
the heap and to keep freed memory for reuse, which removes the churn; ``system`` leaves the
allocator untouched. The process's resident memory then stays at its peak instead of shrinking
between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import torch

from zoo.errors import UserError

ALLOCATOR_POLICIES = ("retain", "system")

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_KEEP_BYTES = 1 << 30  # freed memory at the top of the heap kept up to 1 GiB before trimming
_TOP_PAD_BYTES = 64 << 20  # grow the heap in 64 MiB steps instead of one page at a time


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``mallopt``), else None (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    glibc = hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")
    return libc if glibc else None


_applied: str | None = None


def configure_allocator(policy: str = "retain") -> bool:
    """Apply an allocator policy to this process; True if glibc's settings were changed.

    ``retain``: no mmap for large blocks, no trimming of freed memory (no page-fault churn).
    ``system``: leave malloc as it is. The policy cannot be undone within a process.
    """
    global _applied
    if policy not in ALLOCATOR_POLICIES:
        raise UserError(f"allocator={policy!r}: use one of {', '.join(ALLOCATOR_POLICIES)}")
    if policy == "system":
        return False
    libc = _glibc()
    if libc is None:
        return False
    ok = all(
        libc.mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_MAX, 0),
            (_M_TRIM_THRESHOLD, _KEEP_BYTES),
            (_M_TOP_PAD, _TOP_PAD_BYTES),
        )
    )
    _applied = policy if ok else _applied
    return ok


def allocator_policy() -> str:
    """The policy applied to this process by :func:`configure_allocator` (``system`` if none)."""
    return _applied or "system"


def set_threads(threads: int | None) -> int:
    """Use ``threads`` torch CPU threads (None: torch's default); returns the number in use."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise UserError(
                f"threads={threads!r}: use a whole number >= 1, or null for the default"
            )
        torch.set_num_threads(threads)
    return torch.get_num_threads()
