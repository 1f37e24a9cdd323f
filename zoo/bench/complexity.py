"""Multiply-accumulate counts with PyTorch's own ``torch.utils.flop_counter``.

Why this counter: it ships with torch (no extra dependency), dispatches on the ATen ops that really
run (so concatenated-kernel convolutions, functional convs and ODE solvers are counted as executed,
not guessed from module types), and counts convolutions and matmuls only — the papers' convention
("FLOPs" = 2 × multiply-adds of conv and FC layers; BN, ReLU and pooling are not counted).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, int, int], batch_size: int = 1) -> int:
    """Multiply-accumulates of one forward pass per image at ``input_size`` (C, H, W), eval mode."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else None
        x = torch.zeros(batch_size, *input_size, device=device, dtype=dtype)  # fp64 models too
        with FlopCounterMode(display=False) as counter:
            model(x)
        return counter.get_total_flops() // 2 // batch_size
    finally:
        model.train(was_training)
