"""ResNet: ImageNet models (torchvision layout), CIFAR models (He et al. §4.2), no-shortcut twins.

- He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv:1512.03385.
  ImageNet ResNet-18/34/50/101/152: Table 1 (the v1.5 placement of the stride on the 3×3 conv of
  the bottleneck, as torchvision). Module names and init follow torchvision exactly, so its state
  dicts load strictly and give the same logits.
- CIFAR ResNet-20/32/44/56/110: §4.2 — a 3×3/16 stem, three stages of n basic blocks at 16/32/64
  channels on 32/16/8 px, global pooling, FC (6n+2 layers). Shortcut option "A" (§3.3, zero-padded
  identity), "B" (1×1 conv + BN projection when the shape changes, as in Li et al.'s loss-landscape
  code, the default here) or "none".
- Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018,
  arXiv:1712.09913: the ``_noshort`` twins (§5, Fig. 5) and the wide ``wrn56_k`` models (Fig. 6:
  every stage, stem included, k times wider).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.base import ZooModel, make_linear_head
from zoo.registry import register_model

PAPER_HE = "Deep Residual Learning for Image Recognition (He et al., CVPR 2016, arXiv:1512.03385)"
PAPER_LI = (
    "Visualizing the Loss Landscape of Neural Nets (Li et al., NeurIPS 2018, arXiv:1712.09913)"
)
SHORTCUTS = ("A", "B", "none")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Option A (He et al. §3.3): subsample by ``stride`` and zero-pad the new channels."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


def make_shortcut(kind: str, in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """The identity path of a block whose input and output shapes may differ (None = identity)."""
    if stride == 1 and in_planes == out_planes:
        return None
    if kind == "A":
        return PadShortcut(in_planes, out_planes, stride)
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.use_shortcut = shortcut != "none"
        self.downsample = (
            make_shortcut(shortcut, inplanes, planes, stride) if self.use_shortcut else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.use_shortcut:
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, shortcut: str = "B") -> None:
        super().__init__()
        width = planes
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.use_shortcut = shortcut != "none"
        self.downsample = (
            make_shortcut(shortcut, inplanes, planes * self.expansion, stride)
            if self.use_shortcut
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.use_shortcut:
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class ResNet(ZooModel):
    """A ResNet with an ImageNet stem (7×7/2 + max pool) or a CIFAR stem (3×3/1).

    ``layers[i]`` blocks at ``widths[i]`` channels; every stage after the first halves the size.
    Attribute names (conv1, bn1, layer1…, fc) are torchvision's.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        widths: Sequence[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        stem: str = "imagenet",
        shortcut: str = "B",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        self.inplanes = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, self.inplanes, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(in_chans, self.inplanes)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        for i, (n, width) in enumerate(zip(layers, widths, strict=True)):
            stage = self._make_layer(block, width, n, stride=1 if i == 0 else 2, shortcut=shortcut)
            self.add_module(f"layer{i + 1}", stage)
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = widths[-1] * block.expansion
        self.num_classes = num_classes
        self.fc = make_linear_head(self.num_features, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        n: int,
        stride: int,
        shortcut: str,
    ) -> nn.Sequential:
        blocks = []
        for i in range(n):
            blocks.append(block(self.inplanes, planes, stride if i == 0 else 1, shortcut))
            self.inplanes = planes * block.expansion
        return nn.Sequential(*blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)


# ---- ImageNet (He et al. Table 1; torchvision layout) -------------------------------------------

_IMAGENET_WIDTHS = (64, 128, 256, 512)


def _imagenet(block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], **kw) -> ResNet:
    return ResNet(block, layers, _IMAGENET_WIDTHS, stem="imagenet", **kw)


def _register_imagenet(fn):
    return register_model(
        family="resnet", paper=PAPER_HE, input_size=(3, 224, 224), num_classes=1000
    )(fn)


@_register_imagenet
def resnet18(*, num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False):
    """ResNet-18 (He et al. Table 1); 11,689,512 params, as torchvision."""
    return _imagenet(
        BasicBlock,
        (2, 2, 2, 2),
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_residual=zero_init_residual,
    )


@_register_imagenet
def resnet34(*, num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False):
    """ResNet-34 (He et al. Table 1)."""
    return _imagenet(
        BasicBlock,
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_residual=zero_init_residual,
    )


@_register_imagenet
def resnet50(*, num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False):
    """ResNet-50 (He et al. Table 1, bottleneck); 25,557,032 params, 4.09 GMACs at 224."""
    return _imagenet(
        Bottleneck,
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_residual=zero_init_residual,
    )


@_register_imagenet
def resnet101(*, num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False):
    """ResNet-101 (He et al. Table 1, bottleneck)."""
    return _imagenet(
        Bottleneck,
        (3, 4, 23, 3),
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_residual=zero_init_residual,
    )


@_register_imagenet
def resnet152(*, num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False):
    """ResNet-152 (He et al. Table 1, bottleneck)."""
    return _imagenet(
        Bottleneck,
        (3, 8, 36, 3),
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_residual=zero_init_residual,
    )


# ---- CIFAR (He et al. §4.2; Li et al. §5) --------------------------------------------------------


def cifar_resnet(
    depth: int, *, width: int = 1, num_classes: int = 10, in_chans: int = 3, shortcut: str = "B"
) -> ResNet:
    """A 6n+2-layer CIFAR ResNet, ``width`` times wider (Li et al.'s WRN)."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    widths = tuple(w * width for w in (16, 32, 64))
    return ResNet(
        BasicBlock,
        (n, n, n),
        widths,
        num_classes=num_classes,
        in_chans=in_chans,
        stem="cifar",
        shortcut=shortcut,
    )


def _register_cifar(family: str, paper: str, depth: int, width: int = 1, noshort: bool = False):
    """Register a CIFAR ResNet builder named from its depth/width (the twins share this code)."""
    if width == 1:
        name = f"resnet{depth}" + ("_noshort" if noshort else "")
    else:
        name = f"wrn{depth}_{width}" + ("_noshort" if noshort else "")

    if noshort:

        def builder(*, num_classes: int = 10, in_chans: int = 3) -> ResNet:
            return cifar_resnet(
                depth, width=width, num_classes=num_classes, in_chans=in_chans, shortcut="none"
            )

        builder.__doc__ = f"{name}: {depth}-layer CIFAR ResNet without shortcuts (Li et al. §5)."
    else:

        def builder(*, num_classes: int = 10, in_chans: int = 3, shortcut: str = "B") -> ResNet:
            return cifar_resnet(
                depth, width=width, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut
            )

        builder.__doc__ = f"{name}: {depth}-layer CIFAR ResNet, x{width} wide (He et al. §4.2)."
    builder.__name__ = builder.__qualname__ = name
    register_model(family=family, paper=paper, input_size=(3, 32, 32), num_classes=10)(builder)
    globals()[name] = builder


for _depth in (20, 32, 44, 56, 110):
    _register_cifar("resnet", PAPER_HE, _depth)
    _register_cifar("resnet_noshort", PAPER_LI, _depth, noshort=True)
for _width in (2, 4, 8):
    _register_cifar("resnet", PAPER_LI, 56, width=_width)
    _register_cifar("resnet_noshort", PAPER_LI, 56, width=_width, noshort=True)
