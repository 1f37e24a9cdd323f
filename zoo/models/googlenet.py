"""GoogLeNet (Inception v1).

Szegedy et al., "Going Deeper with Convolutions", CVPR 2015, arXiv:1409.4842, Table 1 and §5:
nine Inception modules (1×1, 3×3-reduce/3×3, 5×5-reduce/5×5 and pool-projection branches),
two auxiliary classifiers after 4a and 4d used only in training, their losses added with weight
0.3 (``aux_loss_weight``). ``googlenet`` has torchvision's exact layout, BatchNorm after every conv
(eps 0.001) and torchvision's known 3×3 kernel in the "5×5" branch (vision#906), so its state
dicts load strictly: 13,004,888 parameters with the auxiliary heads, 6,624,904 without.

In training mode with ``aux_logits=True`` the forward returns ``(logits, aux2, aux1)``
(torchvision's order); in eval mode only the logits.

``googlenet_cifar`` keeps the nine Inception modules for 28–32 px images: a 3×3/192 stem without
the stride-2 convs and the first two max pools, then 3a-3b, pool, 4a-4e, pool, 5a-5b.
"""

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.base import GlobalPool, ZooModel, checkpoint_seq, feature_modules, make_linear_head
from zoo.models.registry import ModelCfg, register_model

PAPER = "Going Deeper with Convolutions (Szegedy et al., CVPR 2015, arXiv:1409.4842)"

# Table 1: (#1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj) per Inception module.
INCEPTION_CFG = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


class BasicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
    ) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1),
            # torchvision uses 3×3 here (vision#906); kept for weight compatibility.
            BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),
        )
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x))
        return torch.cat(branches, 1)


class InceptionAux(nn.Module):
    """§5: 4×4 average pool (adaptive here), 1×1 conv 128, FC 1024, dropout 0.7, FC classes."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))
        x = F.relu(self.fc1(torch.flatten(x, 1)), inplace=True)
        return self.fc2(self.dropout(x))


# The trunk in forward order (the auxiliary heads branch off after 4a and 4d).
TRUNK = (
    "conv1",
    "maxpool1",
    "conv2",
    "conv3",
    "maxpool2",
    "inception3a",
    "inception3b",
    "maxpool3",
    *(f"inception4{m}" for m in "abcde"),
    "maxpool4",
    "inception5a",
    "inception5b",
)


class GoogLeNet(ZooModel):
    """Features: the stem's convolutions and the last module of each Inception stage (3b, 4e,
    5b): strides 2, 4, 8, 16, 32 at 224 px; 1, 1, 2, 4 for ``small_input`` (no stride-2 stem).

    The head is global pooling (``global_pool``), dropout and ``fc``; gradient checkpointing
    recomputes the stem and each Inception module (the auxiliary heads read their inputs).
    """

    aux_loss_weight = 0.3
    head_modules = ("global_pool", "dropout", "fc", "aux1", "aux2")
    __jit_unused_properties__ = ["head_hidden_size", "aux_classifiers"]

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        aux_logits: bool = True,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        self.aux_logits = aux_logits
        self.num_classes = num_classes
        if small_input:
            self.conv1 = BasicConv2d(in_chans, 192, kernel_size=3, padding=1)
            self.maxpool1 = self.conv2 = self.conv3 = self.maxpool2 = nn.Identity()
        else:
            self.conv1 = BasicConv2d(in_chans, 64, kernel_size=7, stride=2, padding=3)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.conv2 = BasicConv2d(64, 64, kernel_size=1)
            self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
            self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        channels = 192
        for name in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
            module = Inception(channels, *INCEPTION_CFG[name])
            self.add_module(f"inception{name}", module)
            channels = module.out_channels
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        stem = [("conv1", 192, 1)] if small_input else [("conv1", 64, 2), ("conv3", 192, 4)]
        r = 1 if small_input else 8  # at inception3b: the stem's strides and pools
        stages = [
            ("inception3b", 480, r),
            ("inception4e", 832, 2 * r),
            ("inception5b", channels, 4 * r),
        ]
        self.feature_info = [
            {"num_chs": c, "reduction": red, "module": m} for m, c, red in [*stem, *stages]
        ]
        if aux_logits:
            self.aux1: InceptionAux | None = InceptionAux(512, num_classes, dropout_aux)
            self.aux2: InceptionAux | None = InceptionAux(528, num_classes, dropout_aux)
        else:
            self.aux1 = self.aux2 = None
        self.global_pool = GlobalPool("avg")
        self.dropout = nn.Dropout(p=dropout)
        self.num_features = channels
        self.fc = make_linear_head(channels, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _forward(
        self, x: torch.Tensor, with_aux: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self._forward_checkpointed(x, with_aux)
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.inception3b(self.inception3a(x))
        x = self.inception4a(self.maxpool3(x))
        aux1: torch.Tensor | None = None
        aux2: torch.Tensor | None = None
        if with_aux and self.aux1 is not None:
            aux1 = self.aux1(x)
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        if with_aux and self.aux2 is not None:
            aux2 = self.aux2(x)
        x = self.inception4e(x)
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        return x, aux2, aux1

    def _forward_checkpointed(self, x: torch.Tensor, with_aux: bool):
        """``_forward`` with the stem and every Inception module checkpointed."""
        stem = [self.conv1, self.maxpool1, self.conv2, self.conv3, self.maxpool2]
        x = checkpoint_seq([nn.Sequential(*stem), self.inception3a, self.inception3b], x)
        x = checkpoint_seq([self.maxpool3, self.inception4a], x)
        aux1 = self.aux1(x) if with_aux and self.aux1 is not None else None
        x = checkpoint_seq([self.inception4b, self.inception4c, self.inception4d], x)
        aux2 = self.aux2(x) if with_aux and self.aux2 is not None else None
        x = checkpoint_seq([self.inception4e, self.maxpool4, self.inception5a], x)
        x = checkpoint_seq([self.inception5b], x)
        return x, aux2, aux1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x, with_aux=False)[0]

    @property
    def aux_classifiers(self) -> tuple[str, ...]:
        """The auxiliary heads' final layers, when the model has them."""
        return ("aux1.fc2", "aux2.fc2") if self.aux1 is not None else ()

    def iter_features(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        taps = feature_modules(self.feature_info)
        for name in TRUNK:
            x = getattr(self, name)(x)
            if name in taps:
                yield x
        yield x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(
        self, x: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with_aux = self.training and self.aux_logits
        features, aux2, aux1 = self._forward(x, with_aux)
        logits = self.forward_head(features)
        if with_aux and aux1 is not None and aux2 is not None:
            return logits, aux2, aux1
        return logits

    def get_classifier(self) -> nn.Module:
        return self.fc

    def set_classifier(self, head: nn.Module) -> None:
        """The main classifier; the auxiliary heads (training only) are rebuilt to match."""
        self.fc = head
        num_classes = self.num_classes
        if self.aux_logits and num_classes > 0:
            self.aux1 = InceptionAux(512, num_classes, self.aux1.dropout.p)
            self.aux2 = InceptionAux(528, num_classes, self.aux2.dropout.p)
        elif num_classes == 0:
            self.aux_logits, self.aux1, self.aux2 = False, None, None


def _cfg(**kwargs) -> ModelCfg:
    """torchvision's ImageNet weights carry the auxiliary heads; a model without them skips them.
    ``classifier`` lists the default model's final layers (``googlenet`` has auxiliary heads)."""
    fields = {"classifier": ("fc", "aux1.fc2", "aux2.fc2"), **kwargs}
    return ModelCfg(
        family="googlenet",
        paper=PAPER,
        first_conv="conv1.conv",
        pretrained_optional=("aux1.", "aux2."),
        **fields,
    )


@register_model(
    _cfg(
        input_size=(3, 224, 224),
        num_classes=1000,
        min_input_size=(3, 15, 15),
        pool_size=(7, 7),
        # torchvision builds GoogLeNet with transform_input=True for its weights: that layer turns
        # ImageNet-normalised input into (x - 0.5) / 0.5, so that is what the weights expect.
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        torchvision="googlenet",
    )
)
def googlenet(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    aux_logits: bool = True,
    dropout: float = 0.2,
    dropout_aux: float = 0.7,
) -> GoogLeNet:
    """GoogLeNet (Szegedy et al. Table 1; torchvision layout): 13,004,888 params with aux heads."""
    return GoogLeNet(
        num_classes=num_classes,
        in_chans=in_chans,
        aux_logits=aux_logits,
        dropout=dropout,
        dropout_aux=dropout_aux,
    )


@register_model(
    _cfg(
        input_size=(3, 32, 32),
        num_classes=10,
        min_input_size=(3, 2, 2),
        pool_size=(8, 8),
        classifier="fc",  # no auxiliary heads by default
        data="cifar10",
    )
)
def googlenet_cifar(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    aux_logits: bool = False,
    dropout: float = 0.2,
    dropout_aux: float = 0.7,
) -> GoogLeNet:
    """GoogLeNet for 28–32 px images: 3×3/192 stem, no early downsampling (see module docstring)."""
    return GoogLeNet(
        num_classes=num_classes,
        in_chans=in_chans,
        aux_logits=aux_logits,
        dropout=dropout,
        dropout_aux=dropout_aux,
        small_input=True,
    )
