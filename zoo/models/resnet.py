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

import dataclasses
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.base import GlobalPool, ZooModel, checkpoint_seq, make_linear_head
from zoo.models.registry import (
    ModelCfg,
    PaperNumbers,
    imagenet_cfg,
    register_model,
)

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
    Attribute names (conv1, bn1, layer1…, fc) are torchvision's. Features: the stem's activation
    and every stage's output (strides 2, 4, 8, 16, 32 for ImageNet; 1, 1, 2, 4 for CIFAR). The
    head is global pooling (``global_pool``) and ``fc``; gradient checkpointing recomputes each
    residual block.
    """

    head_modules = ("global_pool", "fc")

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
        if len(layers) not in (3, 4):
            raise ValueError(f"a ResNet has 3 (CIFAR) or 4 (ImageNet) stages, got {len(layers)}")
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
        if self.num_stages == 3:  # the CIFAR models (a constant None for TorchScript)
            self.layer4 = None
        reduction = 2 if stem == "imagenet" else 1
        self.feature_info = [{"num_chs": widths[0], "reduction": reduction, "module": "relu"}]
        reduction *= 2 if stem == "imagenet" else 1  # the max pool
        for i, width in enumerate(widths):
            reduction *= 1 if i == 0 else 2
            self.feature_info.append(
                {
                    "num_chs": width * block.expansion,
                    "reduction": reduction,
                    "module": f"layer{i + 1}",
                }
            )
        self.global_pool = GlobalPool("avg")
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

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def blocks(self) -> list[nn.Module]:
        return [block for stage in self.stages() for block in stage]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks(), x)
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.layer4 is not None:
            x = self.layer4(x)
        return x

    def iter_features(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        yield x
        x = self.maxpool(x)
        for stage in self.stages():
            x = stage(x)
            yield x
        yield x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.fc(x)


# ---- family factories and data ------------------------------------------------------------------

IMAGENET_WIDTHS = (64, 128, 256, 512)


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


def _imagenet_cfg(name: str) -> ModelCfg:
    """torchvision's and timm's model of the same name share our layout."""
    return imagenet_cfg(
        "resnet",
        PAPER_HE,
        min_input_size=(3, 1, 1),
        pool_size=(7, 7),
        torchvision=name,
        timm=name,
    )


def _cifar_cfg(paper: str = PAPER_HE, paper_numbers: PaperNumbers | None = None) -> ModelCfg:
    return ModelCfg(
        family="resnet",
        paper=paper,
        input_size=(3, 32, 32),
        num_classes=10,
        min_input_size=(3, 1, 1),
        pool_size=(8, 8),
        data="cifar10",
        reference="tomgoldstein/loss-landscape cifar10/models/resnet.py (option-B shortcuts)",
        paper_numbers=paper_numbers,
    )


def _noshort_cfg(paper_numbers: PaperNumbers | None = None) -> ModelCfg:
    return dataclasses.replace(_cifar_cfg(PAPER_LI, paper_numbers), family="resnet_noshort")


def _he_table6(params_m: float, cifar10_error: float) -> PaperNumbers:
    """He et al. count and train the CIFAR ResNets with option-A (parameter-free) shortcuts."""
    return PaperNumbers(
        source="He et al. 2016, Table 6",
        params_m=params_m,
        cifar10_error=cifar10_error,
        builder_kwargs={"shortcut": "A"},
        note="CIFAR-10 with crop + flip augmentation",
    )


def _li_error(cifar10_error: float, where: str = "Fig. 5") -> PaperNumbers:
    return PaperNumbers(
        source=f"Li et al. 2018, {where}",
        cifar10_error=cifar10_error,
        note="CIFAR-10 with crop + flip augmentation, lr 0.1",
    )


# ---- ImageNet (He et al. Table 1; torchvision layout) -------------------------------------------


@register_model(_imagenet_cfg("resnet18"))
def resnet18(*, num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False):
    """ResNet-18 (He et al. Table 1); 11,689,512 params, as torchvision."""
    return ResNet(
        block=BasicBlock,
        layers=(2, 2, 2, 2),
        widths=IMAGENET_WIDTHS,
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_residual=zero_init_residual,
    )


@register_model(_imagenet_cfg("resnet34"))
def resnet34(*, num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False):
    """ResNet-34 (He et al. Table 1)."""
    return ResNet(
        block=BasicBlock,
        layers=(3, 4, 6, 3),
        widths=IMAGENET_WIDTHS,
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_residual=zero_init_residual,
    )


@register_model(_imagenet_cfg("resnet50"))
def resnet50(*, num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False):
    """ResNet-50 (He et al. Table 1, bottleneck); 25,557,032 params, 4.09 GMACs at 224."""
    return ResNet(
        block=Bottleneck,
        layers=(3, 4, 6, 3),
        widths=IMAGENET_WIDTHS,
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_residual=zero_init_residual,
    )


@register_model(_imagenet_cfg("resnet101"))
def resnet101(*, num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False):
    """ResNet-101 (He et al. Table 1, bottleneck)."""
    return ResNet(
        block=Bottleneck,
        layers=(3, 4, 23, 3),
        widths=IMAGENET_WIDTHS,
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_residual=zero_init_residual,
    )


@register_model(_imagenet_cfg("resnet152"))
def resnet152(*, num_classes: int = 1000, in_chans: int = 3, zero_init_residual: bool = False):
    """ResNet-152 (He et al. Table 1, bottleneck)."""
    return ResNet(
        block=Bottleneck,
        layers=(3, 8, 36, 3),
        widths=IMAGENET_WIDTHS,
        num_classes=num_classes,
        in_chans=in_chans,
        zero_init_residual=zero_init_residual,
    )


# ---- CIFAR (He et al. §4.2, Table 6) ------------------------------------------------------------


@register_model(_cifar_cfg(paper_numbers=_he_table6(0.27, 8.75)))
def resnet20(*, num_classes: int = 10, in_chans: int = 3, shortcut: str = "B") -> ResNet:
    """ResNet-20: 20-layer CIFAR ResNet (He et al. §4.2)."""
    return cifar_resnet(depth=20, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut)


@register_model(_cifar_cfg(paper_numbers=_he_table6(0.46, 7.51)))
def resnet32(*, num_classes: int = 10, in_chans: int = 3, shortcut: str = "B") -> ResNet:
    """ResNet-32: 32-layer CIFAR ResNet (He et al. §4.2)."""
    return cifar_resnet(depth=32, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut)


@register_model(_cifar_cfg(paper_numbers=_he_table6(0.66, 7.17)))
def resnet44(*, num_classes: int = 10, in_chans: int = 3, shortcut: str = "B") -> ResNet:
    """ResNet-44: 44-layer CIFAR ResNet (He et al. §4.2)."""
    return cifar_resnet(depth=44, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut)


@register_model(_cifar_cfg(paper_numbers=_he_table6(0.85, 6.97)))
def resnet56(*, num_classes: int = 10, in_chans: int = 3, shortcut: str = "B") -> ResNet:
    """ResNet-56: 56-layer CIFAR ResNet (He et al. §4.2)."""
    return cifar_resnet(depth=56, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut)


@register_model(_cifar_cfg(paper_numbers=_he_table6(1.7, 6.43)))
def resnet110(*, num_classes: int = 10, in_chans: int = 3, shortcut: str = "B") -> ResNet:
    """ResNet-110: 110-layer CIFAR ResNet (He et al. §4.2)."""
    return cifar_resnet(depth=110, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut)


# ---- wide CIFAR ResNets (Li et al. Fig. 6) ------------------------------------------------------


@register_model(_cifar_cfg(PAPER_LI))
def wrn56_2(*, num_classes: int = 10, in_chans: int = 3, shortcut: str = "B") -> ResNet:
    """WRN-56-2: ResNet-56 with every stage twice as wide (Li et al. Fig. 6)."""
    return cifar_resnet(
        depth=56, width=2, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut
    )


@register_model(_cifar_cfg(PAPER_LI))
def wrn56_4(*, num_classes: int = 10, in_chans: int = 3, shortcut: str = "B") -> ResNet:
    """WRN-56-4: ResNet-56 with every stage four times as wide (Li et al. Fig. 6)."""
    return cifar_resnet(
        depth=56, width=4, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut
    )


@register_model(_cifar_cfg(PAPER_LI, _li_error(3.93, "Fig. 6")))
def wrn56_8(*, num_classes: int = 10, in_chans: int = 3, shortcut: str = "B") -> ResNet:
    """WRN-56-8: ResNet-56 with every stage eight times as wide (Li et al. Fig. 6)."""
    return cifar_resnet(
        depth=56, width=8, num_classes=num_classes, in_chans=in_chans, shortcut=shortcut
    )


# ---- no-shortcut twins (Li et al. §5, Fig. 5 and 6) ---------------------------------------------


@register_model(_noshort_cfg(_li_error(8.18)))
def resnet20_noshort(*, num_classes: int = 10, in_chans: int = 3) -> ResNet:
    """ResNet-20 without shortcuts (Li et al. §5)."""
    return cifar_resnet(depth=20, num_classes=num_classes, in_chans=in_chans, shortcut="none")


@register_model(_noshort_cfg())
def resnet32_noshort(*, num_classes: int = 10, in_chans: int = 3) -> ResNet:
    """ResNet-32 without shortcuts (Li et al. §5)."""
    return cifar_resnet(depth=32, num_classes=num_classes, in_chans=in_chans, shortcut="none")


@register_model(_noshort_cfg())
def resnet44_noshort(*, num_classes: int = 10, in_chans: int = 3) -> ResNet:
    """ResNet-44 without shortcuts (Li et al. §5)."""
    return cifar_resnet(depth=44, num_classes=num_classes, in_chans=in_chans, shortcut="none")


@register_model(_noshort_cfg(_li_error(13.31)))
def resnet56_noshort(*, num_classes: int = 10, in_chans: int = 3) -> ResNet:
    """ResNet-56 without shortcuts (Li et al. §5)."""
    return cifar_resnet(depth=56, num_classes=num_classes, in_chans=in_chans, shortcut="none")


@register_model(_noshort_cfg(_li_error(16.44)))
def resnet110_noshort(*, num_classes: int = 10, in_chans: int = 3) -> ResNet:
    """ResNet-110 without shortcuts (Li et al. §5)."""
    return cifar_resnet(depth=110, num_classes=num_classes, in_chans=in_chans, shortcut="none")


@register_model(_noshort_cfg())
def wrn56_2_noshort(*, num_classes: int = 10, in_chans: int = 3) -> ResNet:
    """WRN-56-2 without shortcuts (Li et al. Fig. 6)."""
    return cifar_resnet(
        depth=56, width=2, num_classes=num_classes, in_chans=in_chans, shortcut="none"
    )


@register_model(_noshort_cfg())
def wrn56_4_noshort(*, num_classes: int = 10, in_chans: int = 3) -> ResNet:
    """WRN-56-4 without shortcuts (Li et al. Fig. 6)."""
    return cifar_resnet(
        depth=56, width=4, num_classes=num_classes, in_chans=in_chans, shortcut="none"
    )


@register_model(_noshort_cfg(_li_error(8.70, "Fig. 6")))
def wrn56_8_noshort(*, num_classes: int = 10, in_chans: int = 3) -> ResNet:
    """WRN-56-8 without shortcuts (Li et al. Fig. 6)."""
    return cifar_resnet(
        depth=56, width=8, num_classes=num_classes, in_chans=in_chans, shortcut="none"
    )
