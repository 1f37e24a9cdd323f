"""CliqueNet: convolutional networks with alternately updated clique blocks.

Yang, Zhong, Shen, Lin, "Convolutional Neural Networks with Alternately Updated Clique", CVPR 2018,
arXiv:1802.10419. Re-implemented from the paper (Table 1: the update rule; §3.2–3.3: multi-scale
feature strategy, transition with attention, bottleneck and compression) and the authors' code
(``iboing/CliqueNet``: ``models/utils.py`` for CIFAR, ``imagenet_pytorch/`` for ImageNet).

A clique block has an input X0 and L layers, every pair of layers connected both ways:

- Stage-I: ``X_i = f(W_0i * X0 + sum_{l<i} W_li * X_l)`` (DenseNet-like initialisation);
- Stage-II (once), for i = 1..L in order:
  ``X_i = f(sum_{l<i} W_li * X_l^II + sum_{m>i} W_mi * X_m^I)``, so each layer reads the
  latest version of every other layer and X0 is no longer an input.

f is pre-activation BN-ReLU-conv. The kernels W_li (l<i) serve both stages, W_0i Stage-I only, W_mi
(m>i) Stage-II only; BatchNorm is separate per layer and per stage. Each update is one convolution
over the concatenated inputs with the matching kernels concatenated: all kernels into layer i are
stored packed in ``pair_weights[i]`` (sources in ascending order), so Stage-II uses the whole tensor
and Stage-I a leading slice of it — the shared kernels are literally the same storage.

Stage-II features go through the transition (BN-ReLU-1×1 conv keeping the width, dropout, optional
channel attention, 2×2 average pool) to the next block; {X0, Stage-II} of every block goes, through
optional compression, to BN-ReLU-global pooling, and all blocks' vectors meet in one FC layer.

Options: A attentional transition (SE-style, reduction 2, with biases), B bottleneck (the clique
kernels become 1×1 to k channels, then a 3×3 k→k conv per layer shared by both stages; T counts both
convs), C compression (1×1 conv to half the channels on the classifier path only).

Deliberate choices (see docs/cliquenet.md): convolution init is the official PyTorch code's
fan-out normal N(0, 2/(k²·out)); the CIFAR models can put dropout after every conv but the stem as
the official TF code does (``drop_rate=0.2``, the paper's CIFAR setting; 0 by default, see
docs/cliquenet.md#the-recipe); the ImageNet models have none, as the official PyTorch code.
``cliquenet_k150_t30_abc`` is built with the official code's layout (5 nodes per block, 1×1 + 3×3
each), which gives 10.48M parameters; the paper's table says 10.02M, a figure no layout of the
released code reproduces.
"""

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.base import (
    GlobalPool,
    ZooModel,
    check_global_pool,
    checkpoint,
    make_linear_head,
    no_global_pool,
)
from zoo.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelCfg,
    PaperNumbers,
    PretrainedTag,
    imagenet_cfg,
    register_model,
)

PAPER = (
    "Convolutional Neural Networks with Alternately Updated Clique "
    "(Yang et al., CVPR 2018, arXiv:1802.10419)"
)
STAGES = ("I+I", "I+II", "II+II")


def _bn_relu_conv(x: torch.Tensor, bn: nn.BatchNorm2d, weight: torch.Tensor, padding: int):
    return F.conv2d(F.relu(bn(x)), weight, padding=padding)


class CliqueBlock(nn.Module):
    """One clique block: Stage-I, then (optionally partial) Stage-II.

    ``forward(x0)`` returns ``(stage1, stage2)``, two lists of the L layer outputs; ``stage2[i]`` is
    ``stage1[i]`` for layers outside the feedback (``feedback_layers``).
    """

    def __init__(
        self,
        in_channels: int,
        growth: int,
        num_layers: int,
        bottleneck: bool = False,
        drop_rate: float = 0.0,
        feedback_layers: int | None = None,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        L, k = num_layers, growth
        self.in_channels, self.growth, self.num_layers = in_channels, k, L
        self.feedback_layers = L if feedback_layers is None else int(feedback_layers)
        if not 0 <= self.feedback_layers <= L:
            raise ValueError(f"feedback_layers must be in 0..{L}, got {feedback_layers}")
        self.bottleneck = bottleneck
        self.kernel_size = 1 if bottleneck else 3
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient
        ks = self.kernel_size
        # input_weights[i] = W_0i; pair_weights[i] = [W_1i … W_Li without W_ii] packed on dim 1.
        # Layers outside the feedback only need their Stage-I sources (l < i).
        self.input_weights = nn.ParameterList(
            nn.Parameter(torch.empty(k, in_channels, ks, ks)) for _ in range(L)
        )
        self.pair_weights = nn.ParameterList(
            nn.Parameter(torch.empty(k, (L - 1 if i < self.feedback_layers else i) * k, ks, ks))
            for i in range(L)
        )
        self.bn_stage1 = nn.ModuleList(nn.BatchNorm2d(in_channels + i * k) for i in range(L))
        self.bn_stage2 = nn.ModuleList(
            nn.BatchNorm2d((L - 1) * k) for _ in range(self.feedback_layers)
        )
        for w in [*self.input_weights, *self.pair_weights]:  # the official fan-out normal init
            nn.init.normal_(w, 0, (2.0 / (k * ks * ks)) ** 0.5)
        if bottleneck:
            self.bottleneck_convs = nn.ModuleList(
                nn.Conv2d(k, k, 3, padding=1, bias=False) for _ in range(L)
            )
            self.bn_b_stage1 = nn.ModuleList(nn.BatchNorm2d(k) for _ in range(L))
            self.bn_b_stage2 = nn.ModuleList(nn.BatchNorm2d(k) for _ in range(self.feedback_layers))

    def edge_weight(self, source: int, target: int) -> torch.Tensor:
        """W_{source,target} (layers 1..L, 0 = block input): a view of the packed storage."""
        if source == 0:
            return self.input_weights[target - 1]
        if source == target:
            raise ValueError("a layer has no edge to itself")
        slot = source - 1 if source < target else source - 2
        k = self.growth
        return self.pair_weights[target - 1][:, slot * k : (slot + 1) * k]

    def stage1_weight(self, i: int) -> torch.Tensor:
        """Layer i's (0-based) Stage-I kernels, concatenated: [W_0i, W_1i … W_{i-1}i]."""
        return torch.cat([self.input_weights[i], self.pair_weights[i][:, : i * self.growth]], 1)

    def _update(
        self,
        inputs: list[torch.Tensor],
        bn: nn.BatchNorm2d,
        weight: torch.Tensor,
        i: int,
        bn_b: nn.BatchNorm2d | None,
    ) -> torch.Tensor:
        def concat_bn_relu_conv(*xs: torch.Tensor) -> torch.Tensor:
            return _bn_relu_conv(torch.cat(xs, 1), bn, weight, self.kernel_size // 2)

        if self.memory_efficient and torch.is_grad_enabled():
            out = checkpoint(concat_bn_relu_conv, [bn], *inputs)
        else:
            out = concat_bn_relu_conv(*inputs)
        if self.drop_rate > 0:
            out = F.dropout(out, self.drop_rate, self.training)
        if bn_b is not None:
            out = _bn_relu_conv(out, bn_b, self.bottleneck_convs[i].weight, 1)
            if self.drop_rate > 0:
                out = F.dropout(out, self.drop_rate, self.training)
        return out

    def forward(self, x0: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        stage1: list[torch.Tensor] = []
        for i in range(self.num_layers):
            bn_b = self.bn_b_stage1[i] if self.bottleneck else None
            stage1.append(
                self._update([x0, *stage1], self.bn_stage1[i], self.stage1_weight(i), i, bn_b)
            )
        latest = list(stage1)
        for i in range(self.feedback_layers):
            bn_b = self.bn_b_stage2[i] if self.bottleneck else None
            others = latest[:i] + latest[i + 1 :]
            latest[i] = self._update(others, self.bn_stage2[i], self.pair_weights[i], i, bn_b)
        return stage1, latest


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation with reduction 2 (CliqueNet's attentional transition, option A)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // 2)
        self.fc2 = nn.Linear(channels // 2, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return x * w[:, :, None, None]


class Transition(nn.Module):
    """BN-ReLU-1×1 conv (width kept) - dropout - [attention] - 2×2 average pool."""

    def __init__(self, channels: int, attention: bool, drop_rate: float) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.drop_rate = drop_rate
        self.attention = ChannelAttention(channels) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(self.conv(F.relu(self.bn(x))), self.drop_rate, self.training)
        if self.attention is not None:
            x = self.attention(x)
        return F.avg_pool2d(x, 2)


class Compression(nn.Module):
    """BN-ReLU-1×1 conv to half the channels - dropout (option C, classifier path only)."""

    def __init__(self, channels: int, drop_rate: float) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, channels // 2, 1, bias=False)
        self.drop_rate = drop_rate
        self.out_channels = channels // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.conv(F.relu(self.bn(x))), self.drop_rate, self.training)


class CliqueNet(ZooModel):
    """Stem, clique blocks with transitions, and the multi-scale classifier.

    ``forward_features`` returns the concatenated pooled block features (the multi-scale
    representation, §3.2: ``num_features`` wide); ``forward_head`` applies dropout-free FC.
    Because the classifier reads every block's globally pooled features, the pooling sits in
    ``forward_features``: ``global_pool`` ("avg", "max", "avgmax", "catavgmax") sets it for
    every block, but ``""`` (an unpooled map) is refused — the blocks' maps differ in size;
    ``forward_intermediates`` returns them unpooled. ``set_grad_checkpointing`` switches the
    blocks' ``memory_efficient`` recomputation of each update.

    Features, two per block (``feature_info``'s ``output``): the block feature {X0, Stage-II}
    that the classifier path reads, then the transit feature (Stage-II) that the transition reads,
    at strides 1, 2, 4 (CIFAR) or 4, 8, 16, 32 (ImageNet). ``stages`` "I+II" reads {X0, Stage-I},
    "I+I" also transits Stage-I.
    """

    head_modules = ("compress", "head_norms", "fc")

    def __init__(
        self,
        growth: Sequence[int],
        layers: Sequence[int],
        num_classes: int = 10,
        in_chans: int = 3,
        stem: str = "cifar",
        attention: bool = False,
        bottleneck: bool = False,
        compression: bool = False,
        drop_rate: float = 0.0,
        stages: str = "II+II",
        feedback_layers: int | None = None,
        memory_efficient: bool = False,
        stem_channels: int = 64,
    ) -> None:
        super().__init__()
        if stages not in STAGES:
            raise ValueError(f"stages must be one of {STAGES}, got {stages!r}")
        if len(growth) != len(layers):
            raise ValueError("growth and layers need one entry per block")
        self.stages = stages
        if stem == "cifar":
            self.stem: nn.Module = nn.Conv2d(in_chans, stem_channels, 3, padding=1, bias=False)
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, stem_channels, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(stem_channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        feedback = 0 if stages == "I+I" else feedback_layers
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        self.compress = nn.ModuleList()
        self.head_norms = nn.ModuleList()
        channels = stem_channels
        head_features = 0
        reduction = 1 if stem == "cifar" else 4
        self.feature_info = []
        for b, (k, n) in enumerate(zip(growth, layers, strict=True)):
            self.feature_info += [
                {"num_chs": c, "reduction": reduction, "module": f"blocks.{b}", "output": o}
                for c, o in ((channels + n * k, "block_feature"), (n * k, "transit_feature"))
            ]
            reduction *= 2
            self.blocks.append(
                CliqueBlock(
                    channels,
                    k,
                    n,
                    bottleneck,
                    drop_rate,
                    None if feedback is None else min(feedback, n),
                    memory_efficient,
                )
            )
            block_feature = channels + n * k
            if compression:
                self.compress.append(Compression(block_feature, drop_rate))
                block_feature //= 2
            self.head_norms.append(nn.BatchNorm2d(block_feature))
            head_features += block_feature
            if b < len(layers) - 1:
                self.transitions.append(Transition(n * k, attention, drop_rate))
            channels = n * k
        self.block_widths = head_features  # channels pooled from all blocks together
        self.global_pool = GlobalPool("avg")
        self.num_classes = num_classes
        self.fc = make_linear_head(head_features, num_classes)
        self.grad_checkpointing = memory_efficient

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0, (2.0 / fan_out) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def num_features(self) -> int:
        return self.block_widths * self.global_pool.feat_mult

    @property
    def head_hidden_size(self) -> int:
        return self.num_features

    def set_global_pool(self, pool_type: str, num_classes: int) -> None:
        if pool_type == "":
            raise no_global_pool(
                self,
                pool_type,
                "the classifier reads the globally pooled features of every block, whose maps "
                "differ in size (Yang et al. 2018, §3.2)",
                "forward_intermediates(x) returns the unpooled block features",
            )
        check_global_pool(pool_type, num_classes)
        self.global_pool = GlobalPool(pool_type)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """The family's own recomputation: every clique block's ``memory_efficient`` mode."""
        self.grad_checkpointing = enable
        for block in self.blocks:
            block.memory_efficient = enable

    def _block(self, b: int, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Block ``b``'s block feature (to the classifier) and transit feature."""
        stage1, stage2 = self.blocks[b](x0)
        block_feature = torch.cat([x0, *(stage2 if self.stages == "II+II" else stage1)], 1)
        return block_feature, torch.cat(stage1 if self.stages == "I+I" else stage2, 1)

    def _pool(self, b: int, block_feature: torch.Tensor) -> torch.Tensor:
        """[Compression], BN-ReLU and global pooling: block ``b``'s part of the representation."""
        if len(self.compress):
            block_feature = self.compress[b](block_feature)
        return self.global_pool(F.relu(self.head_norms[b](block_feature)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        pooled = []
        for b in range(len(self.blocks)):
            block_feature, transit_feature = self._block(b, x)
            pooled.append(self._pool(b, block_feature))
            if b < len(self.transitions):
                x = self.transitions[b](transit_feature)
        return torch.cat(pooled, 1)

    def iter_features(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        x = self.stem(x)
        block_features = []
        for b in range(len(self.blocks)):
            block_feature, transit_feature = self._block(b, x)
            yield block_feature
            yield transit_feature
            block_features.append(block_feature)
            if b < len(self.transitions):
                x = self.transitions[b](transit_feature)
        yield torch.cat([self._pool(b, f) for b, f in enumerate(block_features)], 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.fc(x)


# ---- the authors' ImageNet checkpoint ------------------------------------------------------------


def is_official_state_dict(state_dict: dict) -> bool:
    """True for a state dict in the layout of the authors' ``imagenet_pytorch/cliquenet.py``."""
    return any(k.removeprefix("module.").startswith("list_block.") for k in state_dict)


def convert_official_state_dict(state_dict: dict) -> dict[str, torch.Tensor]:
    """Map the authors' keys (``module.list_block.N.conv_param.M.weight`` …) onto ours.

    Their block keeps one 1×1 conv per edge in ``conv_param`` at slot ``i*(L+1)+j`` for edge i→j
    (slot j for the block input); we pack all kernels into layer j in ``pair_weights[j-1]``.
    """
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    out: dict[str, torch.Tensor] = {}
    renames = {"fir_trans.weight": "stem.0.weight", "fc.weight": "fc.weight", "fc.bias": "fc.bias"}
    for key, value in sd.items():
        if key in renames:
            out[renames[key]] = value
        elif key.startswith("fir_bn."):
            out["stem.1." + key.removeprefix("fir_bn.")] = value
        elif key.startswith("list_trans."):
            out["transitions." + key.removeprefix("list_trans.")] = value
        elif key.startswith("list_compress."):
            out["compress." + key.removeprefix("list_compress.")] = value
        elif key.startswith("list_gb."):
            b, _, rest = key.removeprefix("list_gb.").partition(".bn.")
            out[f"head_norms.{b}.{rest}"] = value
    blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith("list_block.")})
    simple = {
        "forward_bn": "bn_stage1",
        "loop_bn": "bn_stage2",
        "forward_bn_b": "bn_b_stage1",
        "loop_bn_b": "bn_b_stage2",
        "conv_param_bottle": "bottleneck_convs",
    }
    for b in blocks:
        prefix = f"list_block.{b}."
        num_layers = len({k.split(".")[3] for k in sd if k.startswith(prefix + "forward_bn.")})
        for key, value in sd.items():
            if not key.startswith(prefix):
                continue
            name, idx, rest = key.removeprefix(prefix).split(".", 2)
            if name in simple:
                out[f"blocks.{b}.{simple[name]}.{idx}.{rest}"] = value
        for j in range(1, num_layers + 1):
            out[f"blocks.{b}.input_weights.{j - 1}"] = sd[f"{prefix}conv_param.{j}.weight"]
            sources = [i for i in range(1, num_layers + 1) if i != j]
            out[f"blocks.{b}.pair_weights.{j - 1}"] = torch.cat(
                [sd[f"{prefix}conv_param.{i * (num_layers + 1) + j}.weight"] for i in sources], 1
            )
    return out


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict:
    """The authors' ImageNet checkpoint layout onto ours; other state dicts pass unchanged."""
    if is_official_state_dict(state_dict):
        return convert_official_state_dict(state_dict)
    return state_dict


# ---- family factory and data ---------------------------------------------------------------------


def cifar_cliquenet(
    growth: int,
    depth: int,
    *,
    attention: bool = False,
    bottleneck: bool = False,
    compression: bool = False,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """Three blocks of T/3 layers (T/6 clique nodes with the bottleneck: T counts both convs).

    ``drop_rate`` defaults to 0: the paper's 0.2 after every convolution is its setting for CIFAR
    without augmentation, and before BatchNorm it costs accuracy on augmented data
    (docs/cliquenet.md#the-recipe). ``drop_rate=0.2`` builds the paper's training setting.
    """
    layers = depth // 3 // (2 if bottleneck else 1)
    return CliqueNet(
        growth=(growth,) * 3,
        layers=(layers,) * 3,
        num_classes=num_classes,
        in_chans=in_chans,
        stem="cifar",
        attention=attention,
        bottleneck=bottleneck,
        compression=compression,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


def _cifar_cfg(
    params_m: float,
    cifar10_error: float,
    cifar100_error: float,
    source: str = "Yang et al. 2018, CIFAR table",
    params_exact: bool = True,
    note: str = "",
) -> ModelCfg:
    return ModelCfg(
        family="cliquenet",
        paper=PAPER,
        input_size=(3, 32, 32),
        num_classes=10,
        min_input_size=(3, 4, 4),
        first_conv="stem",
        data="cifar10",
        reference="iboing/CliqueNet models/utils.py (TensorFlow)",
        paper_numbers=PaperNumbers(
            source=source,
            params_m=params_m,
            cifar10_error=cifar10_error,
            cifar100_error=cifar100_error,
            params_exact=params_exact,
            note=note or "CIFAR without augmentation, dropout 0.2 (drop_rate=0.2)",
        ),
        pretrained_filter_fn=checkpoint_filter_fn,
    )


def _imagenet_cfg(
    params_m: float,
    top1_error: float,
    top5_error: float,
    weights: dict[str, PretrainedTag] | None = None,
) -> ModelCfg:
    return imagenet_cfg(
        "cliquenet",
        PAPER,
        min_input_size=(3, 29, 29),
        first_conv="stem.0",
        reference="iboing/CliqueNet imagenet_pytorch/cliquenet.py",
        paper_numbers=PaperNumbers(
            source="Yang et al. 2018, ImageNet table (single crop)",
            params_m=params_m,
            imagenet_top1_error=top1_error,
            imagenet_top5_error=top5_error,
        ),
        weights=weights or {},
        pretrained_filter_fn=checkpoint_filter_fn,
    )


# The authors' release of CliqueNet-S3 (with attention), the only published CliqueNet weights.
OFFICIAL_S3_WEIGHTS = PretrainedTag(
    source="https://drive.google.com/open?id=1IcsmIrTYmxd62Whh5nf8Z7grcCxNAfDk",
    dataset="ImageNet-1k",
    num_classes=1000,
    input_size=(3, 224, 224),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    metrics={"top1": 75.99, "top5": 92.85},
    cache_name="cliquenet_s3_a.official_in1k.pth.tar",
    notes="the authors' release (Google Drive, no hash published; paper: 24.01% "
    "top-1 error). Google Drive needs a browser: download it by hand and pass its path.",
    # the authors' evaluation (train_imagenet.py): Resize(256), CenterCrop(224), bilinear
    crop_pct=0.875,
    crop_mode="center",
    interpolation="bilinear",
    license="mit",  # the authors' repository
)


# ---- CIFAR (Yang et al.'s CIFAR table; k filters per layer, T layers over 3 blocks) -------------


@register_model(_cifar_cfg(0.94, 5.93, 27.32))
def cliquenet_k36_t12(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet k=36, T=12 (no A/B/C; 4 layers per block), Yang et al. CIFAR table."""
    return cifar_cliquenet(
        growth=36,
        depth=12,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


@register_model(_cifar_cfg(4.49, 5.12, 23.98))
def cliquenet_k64_t15(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet k=64, T=15 (no A/B/C; 5 layers per block), Yang et al. CIFAR table."""
    return cifar_cliquenet(
        growth=64,
        depth=15,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


@register_model(_cifar_cfg(6.94, 5.1, 23.32))
def cliquenet_k80_t15(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet k=80, T=15 (no A/B/C; 5 layers per block), Yang et al. CIFAR table."""
    return cifar_cliquenet(
        growth=80,
        depth=15,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


@register_model(_cifar_cfg(10.14, 5.06, 23.14))
def cliquenet_k80_t18(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet k=80, T=18 (no A/B/C; 6 layers per block), Yang et al. CIFAR table."""
    return cifar_cliquenet(
        growth=80,
        depth=18,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


@register_model(_cifar_cfg(0.98, 5.8, 26.41))
def cliquenet_k36_t12_a(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet k=36, T=12 (A; 4 layers per block), Yang et al. CIFAR table."""
    return cifar_cliquenet(
        growth=36,
        depth=12,
        attention=True,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


@register_model(_cifar_cfg(1.04, 5.69, 26.45))
def cliquenet_k36_t12_c(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet k=36, T=12 (C; 4 layers per block), Yang et al. CIFAR table."""
    return cifar_cliquenet(
        growth=36,
        depth=12,
        compression=True,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


@register_model(_cifar_cfg(1.08, 5.61, 25.55))
def cliquenet_k36_t12_ac(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet k=36, T=12 (A+C; 4 layers per block), Yang et al. CIFAR table."""
    return cifar_cliquenet(
        growth=36,
        depth=12,
        attention=True,
        compression=True,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


@register_model(_cifar_cfg(8.0, 5.17, 22.78))
def cliquenet_k80_t15_ac(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet k=80, T=15 (A+C; 5 layers per block), Yang et al. CIFAR table."""
    return cifar_cliquenet(
        growth=80,
        depth=15,
        attention=True,
        compression=True,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


@register_model(
    _cifar_cfg(1.05, 5.79, 26.85, source="Yang et al. 2018, README Tab. 4 (iboing/CliqueNet)")
)
def cliquenet_k12_t36(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet k=12, T=36 (no A/B/C; 12 layers per block), Yang et al. CIFAR table."""
    return cifar_cliquenet(
        growth=12,
        depth=36,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


@register_model(
    _cifar_cfg(0.99, 6.04, 26.57, source="Yang et al. 2018, README Tab. 4 (iboing/CliqueNet)")
)
def cliquenet_k24_t18(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet k=24, T=18 (no A/B/C; 6 layers per block), Yang et al. CIFAR table."""
    return cifar_cliquenet(
        growth=24,
        depth=18,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


@register_model(
    _cifar_cfg(
        10.02,
        5.06,
        21.83,
        params_exact=False,
        note="10.48M in the official code's layout (5 nodes per block, 1×1 + 3×3 each), "
        "which we follow; no layout of the released code gives 10.02M",
    )
)
def cliquenet_k150_t30_abc(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet k=150, T=30 (A+B+C; 5 layers per block), Yang et al. CIFAR table."""
    return cifar_cliquenet(
        growth=150,
        depth=30,
        attention=True,
        bottleneck=True,
        compression=True,
        num_classes=num_classes,
        in_chans=in_chans,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


# ---- ImageNet (Yang et al.'s ImageNet table; * = without attention) ------------------------------


@register_model(_imagenet_cfg(5.7, 27.52, 8.98))
def cliquenet_s0(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet-S0* (Yang et al. ImageNet table): layers 5/6/6/6, k 36/64/100/80, B+C."""
    return CliqueNet(
        growth=(36, 64, 100, 80),
        layers=(5, 6, 6, 6),
        num_classes=num_classes,
        in_chans=in_chans,
        stem="imagenet",
        attention=False,
        bottleneck=True,
        compression=True,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


@register_model(_imagenet_cfg(7.96, 26.21, 8.3))
def cliquenet_s1(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet-S1* (Yang et al. ImageNet table): layers 5/6/6/6, k 36/80/120/100, B+C."""
    return CliqueNet(
        growth=(36, 80, 120, 100),
        layers=(5, 6, 6, 6),
        num_classes=num_classes,
        in_chans=in_chans,
        stem="imagenet",
        attention=False,
        bottleneck=True,
        compression=True,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


@register_model(_imagenet_cfg(10.0, 25.85, 8.02))
def cliquenet_s2(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet-S2* (Yang et al. ImageNet table): layers 5/5/6/6, k 36/80/150/120, B+C."""
    return CliqueNet(
        growth=(36, 80, 150, 120),
        layers=(5, 5, 6, 6),
        num_classes=num_classes,
        in_chans=in_chans,
        stem="imagenet",
        attention=False,
        bottleneck=True,
        compression=True,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


@register_model(_imagenet_cfg(13.17, 24.98, 7.48))
def cliquenet_s3(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet-S3* (Yang et al. ImageNet table): layers 6/6/6/6, k 40/80/160/160, B+C."""
    return CliqueNet(
        growth=(40, 80, 160, 160),
        layers=(6, 6, 6, 6),
        num_classes=num_classes,
        in_chans=in_chans,
        stem="imagenet",
        attention=False,
        bottleneck=True,
        compression=True,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


@register_model(_imagenet_cfg(11.0, 24.82, 7.51))
def cliquenet_s2_a(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet-S2 (Yang et al. ImageNet table): layers 5/5/6/6, k 36/80/150/120, B+C+A."""
    return CliqueNet(
        growth=(36, 80, 150, 120),
        layers=(5, 5, 6, 6),
        num_classes=num_classes,
        in_chans=in_chans,
        stem="imagenet",
        attention=True,
        bottleneck=True,
        compression=True,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )


@register_model(_imagenet_cfg(14.38, 24.01, 7.15, {"official_in1k": OFFICIAL_S3_WEIGHTS}))
def cliquenet_s3_a(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    stages: str = "II+II",
    feedback_layers: int | None = None,
    memory_efficient: bool = False,
) -> CliqueNet:
    """CliqueNet-S3 (Yang et al. ImageNet table): layers 6/6/6/6, k 40/80/160/160, B+C+A."""
    return CliqueNet(
        growth=(40, 80, 160, 160),
        layers=(6, 6, 6, 6),
        num_classes=num_classes,
        in_chans=in_chans,
        stem="imagenet",
        attention=True,
        bottleneck=True,
        compression=True,
        drop_rate=drop_rate,
        stages=stages,
        feedback_layers=feedback_layers,
        memory_efficient=memory_efficient,
    )
