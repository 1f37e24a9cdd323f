"""Fast mode: exact rewrites of convolutions that the CPU kernels handle badly, plus channels_last.

``optimize(model)`` works on any ``nn.Module`` (zoo, torchvision or timm) and changes neither the
parameters nor the state_dict: it swaps the class of plain ``nn.Conv2d`` modules for a subclass
whose ``forward`` takes a cheaper path when the math is identical, and converts the module to
channels_last. Measured on a 2-core AVX2 CPU (docs/performance.md): at 32×32 input the ImageNet
ResNet-18 and DenseNet-121 spend most of a training step in oneDNN convolution backward on tiny
feature maps, where

- a 1×1 convolution of a channels_last tensor is a matrix product over the last dimension
  (``F.linear`` on the NHWC view, no copy), which MKL's GEMM runs 2–3× faster than the oneDNN
  1×1-convolution backward on 1–8 px maps;
- a k×k convolution with "same" zero padding and stride 1 on a 1×1 map only ever multiplies the
  centre tap (every other tap meets padding), so it is a matrix product with the centre weights.

Gradients are exact too: the taps that are skipped receive zero gradient, as they would from the
convolution. Inputs must be channels_last for the 1×1 path; ``optimize`` makes the module's own
parameters channels_last and :func:`to_fast_input` converts a batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PointwiseConv2d(nn.Conv2d):
    """A 1×1/stride-1 convolution computed as ``F.linear`` on channels_last inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            out = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
            return out.permute(0, 3, 1, 2)
        return super().forward(x)


class SamePaddedConv2d(nn.Conv2d):
    """A stride-1 "same" convolution that uses only its centre tap on 1×1 feature maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[-2:] == (1, 1):
            kh, kw = self.kernel_size
            centre = self.weight[:, :, kh // 2, kw // 2]
            return F.linear(x.flatten(1), centre, self.bias)[:, :, None, None]
        return super().forward(x)


def _rewrite(conv: nn.Conv2d) -> type[nn.Conv2d] | None:
    if type(conv) is not nn.Conv2d or conv.groups != 1 or conv.padding_mode != "zeros":
        return None
    if conv.stride != (1, 1) or conv.dilation != (1, 1) or isinstance(conv.padding, str):
        return None
    kh, kw = conv.kernel_size
    if (kh, kw) == (1, 1) and conv.padding == (0, 0):
        return PointwiseConv2d
    if kh % 2 and kw % 2 and conv.padding == (kh // 2, kw // 2):
        return SamePaddedConv2d
    return None


def optimize(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """Rewrite ``model``'s convolutions in place (see the module docstring); returns ``model``."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            cls = _rewrite(module)
            if cls is not None:
                module.__class__ = cls
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def to_fast_input(x: torch.Tensor) -> torch.Tensor:
    """A 4-D batch in the memory format that :func:`optimize`'s modules expect."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def count_rewritten(model: nn.Module) -> dict[str, int]:
    """How many convolutions of each fast kind ``model`` holds (for reports and tests)."""
    return {
        "pointwise": sum(isinstance(m, PointwiseConv2d) for m in model.modules()),
        "same_padded": sum(isinstance(m, SamePaddedConv2d) for m in model.modules()),
    }
