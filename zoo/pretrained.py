"""Pretrained weights: tags, local files, URLs; safe loading and adaptation.

Minimal foundation version: local state_dict files loaded strictly with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from zoo.errors import UserError


def list_tags(name: str) -> list[str]:
    """Pretrained tags registered for model ``name`` (none yet)."""
    return []


def load_pretrained(model: nn.Module, name: str, source: bool | str) -> None:
    path = Path(str(source))
    if source is True or not path.is_file():
        raise UserError(f"no pretrained weights {source!r} for {name}: give a local .pth path")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
