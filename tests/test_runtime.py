"""The allocator policy (zoo.training.runtime): applied by default, and can be turned off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SYNTHETIC_TINY, run_train

from zoo.errors import UserError
from zoo.training.runtime import _glibc, configure_allocator, set_threads

# Allocate a 256 MiB tensor and count glibc's mmapped blocks while it lives (mallinfo2.hblks).
PROBE = """
import ctypes, sys, torch
from zoo.training.runtime import configure_allocator

FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in FIELDS.split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = configure_allocator(sys.argv[1])
before = libc.mallinfo2().hblks
x = torch.empty(256 << 20, dtype=torch.uint8)
print(applied, libc.mallinfo2().hblks - before)
"""

needs_glibc = pytest.mark.skipif(_glibc() is None, reason="the allocator policy needs glibc")


@needs_glibc
@pytest.mark.parametrize(
    ("policy", "applied", "new_mmaps"), [("retain", True, 0), ("system", False, 1)]
)
def test_retain_serves_large_blocks_without_mmap(
    policy: str, applied: bool, new_mmaps: int
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, policy], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [str(applied), str(new_mmaps)]


def test_unknown_policy_and_bad_threads_are_user_errors() -> None:
    with pytest.raises(UserError, match="allocator='fast'"):
        configure_allocator("fast")
    with pytest.raises(UserError, match="threads=0"):
        set_threads(0)


def test_training_applies_the_configured_policy(tmp_path: Path, monkeypatch) -> None:
    from zoo.tasks import train

    seen = []
    monkeypatch.setattr(train, "configure_allocator", seen.append)
    base = [*SYNTHETIC_TINY, "data.image_size=16", "data.in_chans=1", "trainer.max_epochs=1"]
    run_train(tmp_path / "a", base)
    run_train(tmp_path / "b", [*base, "allocator=system"])
    assert seen == ["retain", "system"]
