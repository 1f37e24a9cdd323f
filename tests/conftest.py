"""Fixtures shared by every test: a fixed torch seed, one intra-op thread for modules of many tiny
forwards. Helpers to import live in tests/helpers/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch on one thread for a module's tests: on batches of one or two small images a second
    thread costs more in synchronisation than it saves, and on a busy machine it waits for a
    core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
