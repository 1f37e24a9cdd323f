"""Shared test fixtures: Fashion-MNIST availability, single-threaded deterministic torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
HAS_FMNIST = (FMNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()

needs_fmnist = pytest.mark.skipif(
    not HAS_FMNIST,
    reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist (see `make data`)",
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
