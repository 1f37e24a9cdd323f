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

import torch
from torch import nn

from zoo.models.base import (
    ConvStackModel,
    GlobalPool,
    ZooModel,
    fc_head,
    make_linear_head,
    stack_feature_info,
)
from zoo.models.registry import (
    ModelCfg,
    PaperNumbers,
    imagenet_cfg,
    register_model,
)

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


class VGG(ConvStackModel):
    """``features``, ``avgpool``, ``classifier`` as in torchvision; ``small_head`` for 32 px.

    Features: each stage's activation before its pool (strides 1, 2, 4, 8, 16) and the last pool
    (stride 32). ``forward_features`` gives 512 maps (``num_features``). The ImageNet head
    averages them to 7×7 and reads that grid flattened into two FC-4096 layers
    (``head_hidden_size`` 4096), so there is no global pooling to change there
    (``reset_classifier``'s ``global_pool`` is refused); ``small_head`` pools globally
    (``global_pool``) in front of its one linear layer.
    """

    head_modules = ("avgpool", "global_pool", "classifier")

    def __init__(
        self,
        features: nn.Sequential,
        num_classes: int = 1000,
        dropout: float = 0.5,
        small_head: bool = False,
    ) -> None:
        super().__init__()
        self.features = features
        self.feature_info = stack_feature_info(features, "features")
        self.num_classes = num_classes
        self.num_features = 512
        self.small_head = small_head
        if small_head:
            self.avgpool = None  # None-valued attributes are constants for TorchScript
            self.global_pool = GlobalPool("avg")
            self.classifier = nn.Sequential(make_linear_head(512, num_classes))
        else:
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.global_pool = None
            self.classifier = fc_head(512 * 7 * 7, 4096, num_classes, dropout, dropout_first=False)
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

    @property
    def head_hidden_size(self) -> int:
        return self.num_features * self.global_pool.feat_mult if self.small_head else 4096

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool is not None:
            x = self.global_pool(x)
            return x if pre_logits else self.classifier(x)
        else:
            return self.forward_flattened(x, pre_logits)

    def set_global_pool(self, pool_type: str, num_classes: int) -> None:
        if self.small_head:
            ZooModel.set_global_pool(self, pool_type, num_classes)
        else:
            super().set_global_pool(pool_type, num_classes)


def create_vgg(
    *,
    config: str,
    batch_norm: bool,
    small_input: bool,
    num_classes: int,
    in_chans: int,
    dropout: float,
) -> VGG:
    """A VGG of Table 1's ``config``; ``small_input``: ceil-mode pools and a 512→classes head."""
    features = make_layers(CONFIGS[config], in_chans, batch_norm, ceil_mode=small_input)
    return VGG(features, num_classes=num_classes, dropout=dropout, small_head=small_input)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict:
    """timm's VGG head (a conv MLP: ``pre_logits.fc1/fc2``, ``head.fc``) onto torchvision's
    ``classifier.0/3/6`` (the inverse of timm's ``vgg._filter_fn``)."""
    if "pre_logits.fc1.weight" not in state_dict or "head.fc.weight" not in state_dict:
        return state_dict
    sd = dict(state_dict)
    fc1 = sd.pop("pre_logits.fc1.weight")
    sd["classifier.0.weight"] = fc1.reshape(fc1.shape[0], -1)
    sd["classifier.0.bias"] = sd.pop("pre_logits.fc1.bias")
    sd["classifier.3.weight"] = sd.pop("pre_logits.fc2.weight").flatten(1)
    sd["classifier.3.bias"] = sd.pop("pre_logits.fc2.bias")
    sd["classifier.6.weight"] = sd.pop("head.fc.weight")
    sd["classifier.6.bias"] = sd.pop("head.fc.bias")
    return sd


def _imagenet_cfg(name: str, params_m: float | None = None) -> ModelCfg:
    """torchvision's and timm's model of the same name (timm's head converted on loading);
    ``params_m`` as Table 2 prints it (the paper has no BatchNorm variants)."""
    return imagenet_cfg(
        "vgg",
        PAPER,
        min_input_size=(3, 32, 32),
        pool_size=(7, 7),
        first_conv="features.0",
        classifier="classifier.6",
        torchvision=name,
        timm=name,
        paper_numbers=(
            PaperNumbers(source="Simonyan & Zisserman 2015, Table 2", params_m=params_m)
            if params_m
            else None
        ),
        pretrained_filter_fn=checkpoint_filter_fn,
    )


def _cifar_cfg() -> ModelCfg:
    return ModelCfg(
        family="vgg",
        paper=PAPER,
        input_size=(3, 32, 32),
        num_classes=10,
        min_input_size=(3, 1, 1),
        pool_size=(1, 1),
        first_conv="features.0",
        classifier="classifier.0",
        data="cifar10",
        reference="kuangliu/pytorch-cifar models/vgg.py (BatchNorm, 512→classes head)",
    )


# ---- ImageNet (Table 1; torchvision layout) ------------------------------------------------------


@register_model(_imagenet_cfg("vgg11", params_m=133))
def vgg11(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 (Simonyan & Zisserman Table 1, config A); torchvision layout."""
    return create_vgg(
        config="A",
        batch_norm=False,
        small_input=False,
        num_classes=num_classes,
        in_chans=in_chans,
        dropout=dropout,
    )


@register_model(_imagenet_cfg("vgg11_bn"))
def vgg11_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 with BatchNorm (Simonyan & Zisserman Table 1, config A); torchvision layout."""
    return create_vgg(
        config="A",
        batch_norm=True,
        small_input=False,
        num_classes=num_classes,
        in_chans=in_chans,
        dropout=dropout,
    )


@register_model(_imagenet_cfg("vgg13", params_m=133))
def vgg13(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13 (Simonyan & Zisserman Table 1, config B); torchvision layout."""
    return create_vgg(
        config="B",
        batch_norm=False,
        small_input=False,
        num_classes=num_classes,
        in_chans=in_chans,
        dropout=dropout,
    )


@register_model(_imagenet_cfg("vgg13_bn"))
def vgg13_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-13 with BatchNorm (Simonyan & Zisserman Table 1, config B); torchvision layout."""
    return create_vgg(
        config="B",
        batch_norm=True,
        small_input=False,
        num_classes=num_classes,
        in_chans=in_chans,
        dropout=dropout,
    )


@register_model(_imagenet_cfg("vgg16", params_m=138))
def vgg16(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16 (Simonyan & Zisserman Table 1, config D); torchvision layout."""
    return create_vgg(
        config="D",
        batch_norm=False,
        small_input=False,
        num_classes=num_classes,
        in_chans=in_chans,
        dropout=dropout,
    )


@register_model(_imagenet_cfg("vgg16_bn"))
def vgg16_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16 with BatchNorm (Simonyan & Zisserman Table 1, config D); torchvision layout."""
    return create_vgg(
        config="D",
        batch_norm=True,
        small_input=False,
        num_classes=num_classes,
        in_chans=in_chans,
        dropout=dropout,
    )


@register_model(_imagenet_cfg("vgg19", params_m=144))
def vgg19(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-19 (Simonyan & Zisserman Table 1, config E); torchvision layout."""
    return create_vgg(
        config="E",
        batch_norm=False,
        small_input=False,
        num_classes=num_classes,
        in_chans=in_chans,
        dropout=dropout,
    )


@register_model(_imagenet_cfg("vgg19_bn"))
def vgg19_bn(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-19 with BatchNorm (Simonyan & Zisserman Table 1, config E); torchvision layout."""
    return create_vgg(
        config="E",
        batch_norm=True,
        small_input=False,
        num_classes=num_classes,
        in_chans=in_chans,
        dropout=dropout,
    )


# ---- 28–32 px inputs -----------------------------------------------------------------------------


@register_model(_cifar_cfg())
def vgg11_bn_cifar(*, num_classes: int = 10, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-11 with BatchNorm (Simonyan & Zisserman config A) for 28–32 px, 512→classes head."""
    return create_vgg(
        config="A",
        batch_norm=True,
        small_input=True,
        num_classes=num_classes,
        in_chans=in_chans,
        dropout=dropout,
    )


@register_model(_cifar_cfg())
def vgg16_bn_cifar(*, num_classes: int = 10, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-16 with BatchNorm (Simonyan & Zisserman config D) for 28–32 px, 512→classes head."""
    return create_vgg(
        config="D",
        batch_norm=True,
        small_input=True,
        num_classes=num_classes,
        in_chans=in_chans,
        dropout=dropout,
    )


@register_model(_cifar_cfg())
def vgg19_bn_cifar(*, num_classes: int = 10, in_chans: int = 3, dropout: float = 0.5) -> VGG:
    """VGG-19 with BatchNorm (Simonyan & Zisserman config E) for 28–32 px, 512→classes head."""
    return create_vgg(
        config="E",
        batch_norm=True,
        small_input=True,
        num_classes=num_classes,
        in_chans=in_chans,
        dropout=dropout,
    )
