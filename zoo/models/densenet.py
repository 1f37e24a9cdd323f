"""DenseNet: ImageNet models with torchvision's layout and the CIFAR models of Table 2.

Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks", CVPR 2017,
arXiv:1608.06993.

- ImageNet DenseNet-121/161/169/201 (Table 1): 7×7/2 stem + max pool, four dense blocks of BC
  layers (BN-ReLU-1×1 conv to 4k, BN-ReLU-3×3 conv to k), transitions halving channels and size.
  Module names and init are torchvision's, so its state dicts load strictly.
- CIFAR DenseNets (§3 "Implementation Details", Table 2): a 3×3 stem (16 channels, or 2k for BC),
  three dense blocks of (depth-4)/3 plain layers (BN-ReLU-3×3) or (depth-4)/6 BC layers, 1×1-conv +
  2×2 average-pool transitions (compression 0.5 for BC), BN-ReLU-global pool-FC.

``memory_efficient=True`` (or ``set_grad_checkpointing()``) recomputes the
concatenation-BN-ReLU-conv of each layer in backward (gradient checkpointing; Pleiss et al. 2017,
arXiv:1707.06990) instead of storing it.
"""

import re
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.base import (
    GlobalPool,
    ZooModel,
    checkpoint,
    feature_modules,
    iter_stack,
    make_linear_head,
)
from zoo.models.registry import (
    ModelCfg,
    PaperNumbers,
    imagenet_cfg,
    register_model,
)

PAPER = "Densely Connected Convolutional Networks (Huang et al., CVPR 2017, arXiv:1608.06993)"


class DenseLayer(nn.Module):
    """BN-ReLU-conv on the concatenation of all earlier features; with ``bn_size`` a BC layer."""

    def __init__(
        self,
        num_input_features: int,
        growth_rate: int,
        bn_size: int | None,
        drop_rate: float,
        memory_efficient: bool,
        drop_inside: bool = False,
    ) -> None:
        super().__init__()
        self.bottleneck = bn_size is not None
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        if bn_size is not None:
            self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False)
            self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
            self.relu2 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(num_input_features, growth_rate, 3, padding=1, bias=False)
            self.norm2 = self.relu2 = self.conv2 = None  # constants for TorchScript
        self.drop_rate = float(drop_rate)
        # Huang et al.'s Torch code also drops after the 1×1 bottleneck; torchvision does not.
        self.drop_inside = drop_inside and self.bottleneck and self.drop_rate > 0
        self.memory_efficient = memory_efficient

    def _first_conv(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[0] if len(features) == 1 else torch.cat(features, 1)
        out = self.conv1(self.relu1(self.norm1(x)))
        if self.drop_inside:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        if self.norm2 is not None and self.relu2 is not None:
            out = self.relu2(self.norm2(out))
        return out

    def _first_conv_checkpointed(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Recompute the concatenation, BN-ReLU-conv1 and BN-ReLU in backward: only the
        bottleneck activation that conv2 reads is stored (Pleiss et al. 2017 store less than
        torchvision's memory_efficient, which keeps conv1's output and BN2's input)."""
        norms = [n for n in (self.norm1, self.norm2) if n is not None]
        return checkpoint(lambda *fs: self._first_conv(list(fs)), norms, *features)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if (
            self.memory_efficient
            and not torch.jit.is_scripting()
            and torch.is_grad_enabled()
            and any(f.requires_grad for f in features)
        ):
            out = self._first_conv_checkpointed(features)
        else:
            out = self._first_conv(features)
        if self.conv2 is not None:
            out = self.conv2(out)
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.ModuleDict):
    def __init__(
        self,
        num_layers: int,
        num_input_features: int,
        growth_rate: int,
        bn_size: int | None,
        drop_rate: float,
        memory_efficient: bool,
        drop_inside: bool = False,
    ) -> None:
        super().__init__()
        for i in range(num_layers):
            layer = DenseLayer(
                num_input_features + i * growth_rate,
                growth_rate,
                bn_size,
                drop_rate,
                memory_efficient,
                drop_inside,
            )
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, init_features: torch.Tensor) -> torch.Tensor:
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)

    def set_memory_efficient(self, enable: bool) -> None:
        for layer in self.values():
            layer.memory_efficient = enable


class Transition(nn.Sequential):
    """BN-ReLU-conv1×1(-dropout)-avgpool; ``memory_efficient`` recomputes BN-ReLU-conv."""

    def __init__(
        self,
        num_input_features: int,
        num_output_features: int,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ):
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, 1, bias=False)
        if drop_rate > 0:
            self.drop = nn.Dropout(drop_rate)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.memory_efficient = memory_efficient

    def _convolve(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.relu(self.norm(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.memory_efficient
            and not torch.jit.is_scripting()
            and torch.is_grad_enabled()
            and x.requires_grad
        ):
            x = checkpoint(self._convolve, [self.norm], x)
        else:
            x = self._convolve(x)
        if hasattr(self, "drop"):
            x = self.drop(x)
        return self.pool(x)


class DenseNet(ZooModel):
    """DenseNet with an ImageNet stem (7×7/2 + BN-ReLU + max pool) or a CIFAR 3×3 stem.

    ``features`` holds conv0[-norm0-relu0-pool0], denseblock{i}, transition{i} and norm5, exactly as
    torchvision names them. Features: the stem and every dense block's output, the last after
    norm5 (strides 2, 4, 8, 16, 32 for ImageNet; 1, 1, 2, 4 for CIFAR). The head is ReLU, global
    pooling (``global_pool``) and ``classifier``; ``set_grad_checkpointing`` switches the
    layers' and transitions' ``memory_efficient`` recomputation.
    """

    classifier_name = "classifier"
    head_modules = ("global_pool", "classifier")

    def __init__(
        self,
        growth_rate: int,
        block_config: Sequence[int],
        num_init_features: int,
        bn_size: int | None = 4,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        stem: str = "imagenet",
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        features = nn.Sequential()
        imagenet = stem == "imagenet"
        stem_tap = "features.relu0" if imagenet else "features.conv0"
        self.feature_info = [
            {"num_chs": num_init_features, "reduction": 2 if imagenet else 1, "module": stem_tap}
        ]
        reduction = 4 if imagenet else 1
        if imagenet:
            features.add_module(
                "conv0", nn.Conv2d(in_chans, num_init_features, 7, stride=2, padding=3, bias=False)
            )
            features.add_module("norm0", nn.BatchNorm2d(num_init_features))
            features.add_module("relu0", nn.ReLU(inplace=True))
            features.add_module("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        else:
            features.add_module(
                "conv0", nn.Conv2d(in_chans, num_init_features, 3, padding=1, bias=False)
            )
        channels = num_init_features
        # Dropout: torchvision's ImageNet models drop only each layer's output; the CIFAR models
        # follow Huang et al.'s Torch code (dropout after every conv, transitions included).
        cifar = stem == "cifar"
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(
                num_layers, channels, growth_rate, bn_size, drop_rate, memory_efficient, cifar
            )
            features.add_module(f"denseblock{i + 1}", block)
            channels += num_layers * growth_rate
            last = i == len(block_config) - 1
            module = "features.norm5" if last else f"features.denseblock{i + 1}"
            self.feature_info.append(
                {"num_chs": channels, "reduction": reduction, "module": module}
            )
            reduction *= 2
            if not last:
                out_channels = int(channels * compression)
                trans_drop = drop_rate if cifar else 0.0
                transition = Transition(channels, out_channels, trans_drop, memory_efficient)
                features.add_module(f"transition{i + 1}", transition)
                channels = out_channels
        features.add_module("norm5", nn.BatchNorm2d(channels))
        self.features = features
        self.num_features = channels
        self.num_classes = num_classes
        self.global_pool = GlobalPool("avg")
        self.classifier = make_linear_head(channels, num_classes)
        self.grad_checkpointing = memory_efficient

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def iter_features(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        x = yield from iter_stack(self.features, x, feature_modules(self.feature_info), "features")
        yield x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(F.relu(x))
        return x if pre_logits else self.classifier(x)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """The family's own recomputation: every dense layer's and transition's
        ``memory_efficient`` mode (see the module docstring)."""
        self.grad_checkpointing = enable
        for module in self.features:
            if isinstance(module, DenseBlock):
                module.set_memory_efficient(enable)
            elif isinstance(module, Transition):
                module.memory_efficient = enable


# ---- checkpoint conversion, family factories and data --------------------------------------------

# torchvision's densenet*-*.pth files predate the module renaming (denselayerN.norm.1 -> norm1);
# torchvision's own loader renames them the same way.
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict:
    """torchvision's legacy DenseNet key names onto ours (timm's ``pretrained_filter_fn``)."""
    return {_LEGACY_KEY.sub(r"\1\2", k): v for k, v in state_dict.items()}


def cifar_densenet(
    depth: int,
    growth_rate: int,
    bc: bool,
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """A 3-block CIFAR DenseNet of ``depth`` layers (Huang et al. §3, Table 2)."""
    per_block = (depth - 4) // (6 if bc else 3)
    return DenseNet(
        growth_rate,
        (per_block,) * 3,
        2 * growth_rate if bc else 16,
        bn_size=4 if bc else None,
        compression=0.5 if bc else 1.0,
        drop_rate=drop_rate,
        num_classes=num_classes,
        in_chans=in_chans,
        stem="cifar",
        memory_efficient=memory_efficient,
    )


def _imagenet_cfg(name: str, paper_numbers: PaperNumbers | None = None) -> ModelCfg:
    """torchvision's and timm's model of the same name share our layout."""
    return imagenet_cfg(
        "densenet",
        PAPER,
        min_input_size=(3, 29, 29),
        pool_size=(7, 7),
        first_conv="features.conv0",
        classifier="classifier",
        torchvision=name,
        timm=name,
        paper_numbers=paper_numbers,
        pretrained_filter_fn=checkpoint_filter_fn,
    )


def _cifar_cfg(paper_numbers: PaperNumbers) -> ModelCfg:
    return ModelCfg(
        family="densenet",
        paper=PAPER,
        input_size=(3, 32, 32),
        num_classes=10,
        min_input_size=(3, 4, 4),
        pool_size=(8, 8),
        first_conv="features.conv0",
        classifier="classifier",
        data="cifar10",
        reference="liuzhuang13/DenseNet models/densenet.lua (Torch)",
        paper_numbers=paper_numbers,
        pretrained_filter_fn=checkpoint_filter_fn,
    )


def _table2(
    params_m: float, cifar10_error: float | None = None, cifar100_error: float | None = None
) -> PaperNumbers:
    return PaperNumbers(
        source="Huang et al. 2017, Table 2 (C10, no augmentation)",
        params_m=params_m,
        cifar10_error=cifar10_error,
        cifar100_error=cifar100_error,
        note="trained with dropout 0.2 when there is no augmentation",
    )


# ---- ImageNet (Table 1; torchvision layout) ------------------------------------------------------


@register_model(
    _imagenet_cfg(
        "densenet121",
        PaperNumbers(
            source="Huang et al. 2017, Table 3 (single crop)",
            imagenet_top1_error=25.02,
            imagenet_top5_error=7.71,
        ),
    )
)
def densenet121(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet-121 (Huang et al. Table 1, k=32); 7,978,856 params, as torchvision."""
    return DenseNet(
        growth_rate=32,
        block_config=(6, 12, 24, 16),
        num_init_features=64,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
    )


@register_model(_imagenet_cfg("densenet161"))
def densenet161(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet-161 (Huang et al. Table 1, k=48)."""
    return DenseNet(
        growth_rate=48,
        block_config=(6, 12, 36, 24),
        num_init_features=96,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
    )


@register_model(_imagenet_cfg("densenet169"))
def densenet169(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet-169 (Huang et al. Table 1, k=32)."""
    return DenseNet(
        growth_rate=32,
        block_config=(6, 12, 32, 32),
        num_init_features=64,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
    )


@register_model(_imagenet_cfg("densenet201"))
def densenet201(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet-201 (Huang et al. Table 1, k=32); 20,013,928 params, as torchvision."""
    return DenseNet(
        growth_rate=32,
        block_config=(6, 12, 48, 32),
        num_init_features=64,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
    )


# ---- CIFAR (Table 2) -----------------------------------------------------------------------------


@register_model(_cifar_cfg(_table2(1.0, 7.00, 27.55)))
def densenet40_k12(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet (L=40, k=12), Huang et al. Table 2."""
    return cifar_densenet(
        depth=40,
        growth_rate=12,
        bc=False,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
    )


def _clique_table4(params_m: float, cifar10_error: float, cifar100_error: float) -> PaperNumbers:
    """The DenseNets the CliqueNet authors trained at CliqueNet's growth rate k and T layers."""
    return PaperNumbers(
        source="Yang et al. 2018, README Tab. 4 (iboing/CliqueNet)",
        params_m=params_m,
        cifar10_error=cifar10_error,
        cifar100_error=cifar100_error,
        note="C10/C100 without augmentation; the same k and T as cliquenet_k36_t12 / k24_t18",
    )


@register_model(_cifar_cfg(_clique_table4(0.96, 6.89, 27.54)))
def densenet16_k36(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet (k=36, T=12: three blocks of four layers, L=16), CliqueNet's equal-size twin of
    cliquenet_k36_t12 (Yang et al. 2018, README Tab. 4)."""
    return cifar_densenet(
        depth=16,
        growth_rate=36,
        bc=False,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
    )


@register_model(_cifar_cfg(_clique_table4(0.99, 7.13, 27.70)))
def densenet22_k24(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet (k=24, T=18: three blocks of six layers, L=22), CliqueNet's equal-size twin of
    cliquenet_k24_t18 (Yang et al. 2018, README Tab. 4)."""
    return cifar_densenet(
        depth=22,
        growth_rate=24,
        bc=False,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
    )


@register_model(_cifar_cfg(_table2(7.0, 5.77, 23.79)))
def densenet100_k12(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet (L=100, k=12), Huang et al. Table 2."""
    return cifar_densenet(
        depth=100,
        growth_rate=12,
        bc=False,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
    )


@register_model(_cifar_cfg(_table2(0.8, 5.92, 24.15)))
def densenet_bc100_k12(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet-BC (L=100, k=12), Huang et al. Table 2."""
    return cifar_densenet(
        depth=100,
        growth_rate=12,
        bc=True,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
    )


@register_model(_cifar_cfg(_table2(15.3, 5.19, 19.64)))
def densenet_bc250_k24(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet-BC (L=250, k=24), Huang et al. Table 2."""
    return cifar_densenet(
        depth=250,
        growth_rate=24,
        bc=True,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
    )


@register_model(_cifar_cfg(_table2(25.6)))
def densenet_bc190_k40(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> DenseNet:
    """DenseNet-BC (L=190, k=40), Huang et al. Table 2 (reported with augmentation only)."""
    return cifar_densenet(
        depth=190,
        growth_rate=40,
        bc=True,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
    )
