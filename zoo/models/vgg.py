"""VGG.

Simonyan, Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015, arXiv:1409.1556, Table 1: configurations A (VGG-11), B (13), D (16), E (19) of 3×3 convs
and 2×2 max pools, then FC-4096, FC-4096, FC-classes with dropout 0.5. The ``_bn`` variants add
BatchNorm after every conv (Ioffe & Szegedy 2015). Module layout, init and the 7×7 adaptive pool are
torchvision's: vgg16 has 138,357,544 parameters, vgg16_bn 138,365,992.

``vgg{11,16,19}_bn_cifar`` keep the conv stacks for 28–32 px images (as in Liu & Deng 2015 and the
common CIFAR ports): pools use ``ceil_mode`` so that 28 px inputs reach 1×1 like 32 px ones, and the
head is one 512→classes linear layer after global pooling.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.models.base import ZooModel, make_linear_head
from zoo.registry import register_model

PAPER = (
    "Very Deep Convolutional Networks for Large-Scale Image Recognition "
    "(Simonyan & Zisserman, ICLR 2015, arXiv:1409.1556)"
)

# Table 1: numbers are 3×3 conv widths, "M" a 2×2 max pool.
CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}
DEPTH_TO_CONFIG = {11: "A", 13: "B", 16: "D", 19: "E"}


def make_layers(cfg: list[int | str], in_chans: int, batch_norm: bool, ceil_mode: bool = False):
    layers: list[nn.Module] = []
    channels = in_chans
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode))
            continue
        layers.append(nn.Conv2d(channels, int(v), kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(v)))
        layers.append(nn.ReLU(inplace=True))
        channels = int(v)
    return nn.Sequential(*layers)


class VGG(ZooModel):
    """``features``, ``avgpool``, ``classifier`` as in torchvision; ``small_head`` for 32 px."""

    def __init__(
        self,
        features: nn.Sequential,
        num_classes: int = 1000,
        dropout: float = 0.5,
        small_head: bool = False,
    ) -> None:
        super().__init__()
        self.features = features
        self.num_classes = num_classes
        self.small_head = small_head
        if small_head:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.num_features = 512
            self.classifier = nn.Sequential(make_linear_head(512, num_classes))
        else:
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.num_features = 4096
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096),
                nn.ReLU(True),
                nn.Dropout(p=dropout),
                nn.Linear(4096, 4096),
                nn.ReLU(True),
                nn.Dropout(p=dropout),
                make_linear_head(4096, num_classes),
            )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        if not pre_logits:
            return self.classifier(x)
        for layer in list(self.classifier)[:-1]:
            x = layer(x)
        return x

    def get_classifier(self) -> nn.Module:
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier[-1] = make_linear_head(self.num_features, num_classes)


def _register(depth: int, batch_norm: bool, cifar: bool) -> None:
    name = f"vgg{depth}" + ("_bn" if batch_norm else "") + ("_cifar" if cifar else "")
    cfg = CONFIGS[DEPTH_TO_CONFIG[depth]]

    def builder(
        *, num_classes: int = 10 if cifar else 1000, in_chans: int = 3, dropout: float = 0.5
    ) -> VGG:
        features = make_layers(cfg, in_chans, batch_norm, ceil_mode=cifar)
        return VGG(features, num_classes=num_classes, dropout=dropout, small_head=cifar)

    bn = " with BatchNorm" if batch_norm else ""
    where = "for 28–32 px inputs, 512→classes head" if cifar else "torchvision layout"
    builder.__doc__ = (
        f"VGG-{depth}{bn} (Simonyan & Zisserman Table 1, config {DEPTH_TO_CONFIG[depth]}); {where}."
    )
    builder.__name__ = builder.__qualname__ = name
    size = (3, 32, 32) if cifar else (3, 224, 224)
    register_model(family="vgg", paper=PAPER, input_size=size, num_classes=10 if cifar else 1000)(
        builder
    )
    globals()[name] = builder


for _depth in (11, 13, 16, 19):
    for _bn in (False, True):
        _register(_depth, _bn, cifar=False)
for _depth in (11, 16, 19):
    _register(_depth, True, cifar=True)
