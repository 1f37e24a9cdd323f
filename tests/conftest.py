"""Fixtures shared by every test: a fixed torch seed. Helpers to import live in tests/helpers/."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
