"""LeNet-5.

LeCun, Bottou, Bengio, Haffner, "Gradient-Based Learning Applied to Document Recognition",
Proc. IEEE 86(11), 1998, §II.B and Fig. 2: C1 conv 5×5 (6) - S2 pool - C3 conv 5×5 (16) - S4 pool -
C5 (120) - F6 (84) - output. The network reads 32×32 images; 28×28 inputs (MNIST, Fashion-MNIST)
are zero-padded by 2 on each side, as the paper pads MNIST's 20×20 digits into a 32×32 field.

Modern reading, as in every LeNet-5 port: C3 is fully connected to S2 (the paper's sparse table,
Table I, has 1,516 parameters instead of 2,416), S2/S4 are parameter-free pools (the paper's have a
trainable coefficient and bias per map), ReLU and max pooling by default (``activation="tanh"``,
``pool="avg"`` give the 1998 flavour) and a linear output with cross-entropy instead of RBF units.
The parameter count is 61,706 at 1 channel and 10 classes.
"""

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.base import (
    ZooModel,
    checkpoint_seq,
    feature_modules,
    iter_stack,
    make_linear_head,
    no_global_pool,
    stack_feature_info,
    stack_stages,
)
from zoo.models.registry import ModelCfg, register_model

PAPER = "Gradient-Based Learning Applied to Document Recognition (LeCun et al., Proc. IEEE 1998)"


class LeNet5(ZooModel):
    """C1-S2-C3-S4 in ``features``, C5-F6 in ``pre_logits``, the output layer in ``fc``.

    Features: C1's and C3's activations and S4 (strides 1, 2, 4 on the 32×32 field).
    ``forward_features`` gives S4's 16 maps of 5×5 (``num_features`` 16); the head reads them
    flattened (C5, F6: ``head_hidden_size`` 84), so there is no global pooling to change:
    ``reset_classifier``'s ``global_pool`` is refused.
    """

    head_modules = ("pre_logits", "fc")
    head_hidden_size = 84  # F6

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        activation: str = "relu",
        pool: str = "max",
    ) -> None:
        super().__init__()
        acts = {"relu": nn.ReLU, "tanh": nn.Tanh}
        pools = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
        if activation not in acts:
            raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
        if pool not in pools:
            raise ValueError(f"pool must be one of {sorted(pools)}, got {pool!r}")
        act, pool_layer = acts[activation], pools[pool]
        self.num_classes = num_classes
        self.num_features = 16
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, kernel_size=5),  # C1: 32 -> 28
            act(),
            pool_layer(2),  # S2: 28 -> 14
            nn.Conv2d(6, 16, kernel_size=5),  # C3: 14 -> 10
            act(),
            pool_layer(2),  # S4: 10 -> 5
        )
        self.feature_info = stack_feature_info(self.features, "features")
        self.pre_logits = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),  # C5
            act(),
            nn.Linear(120, 84),  # F6
            act(),
        )
        self.fc = make_linear_head(84, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_32(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(stack_stages(self.features), x)
        return self.features(x)

    def iter_features(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        taps = feature_modules(self.feature_info)
        x = yield from iter_stack(self.features, pad_to_32(x), taps, "features")
        yield x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(x)
        return x if pre_logits else self.fc(x)

    def set_global_pool(self, pool_type: str, num_classes: int) -> None:
        raise no_global_pool(
            self,
            pool_type,
            "C5 and F6 read the 16 maps of 5x5 flattened (LeCun et al. 1998, Fig. 2)",
            "forward_features(x) gives the unpooled maps",
        )


def pad_to_32(x: torch.Tensor) -> torch.Tensor:
    """Centre smaller images in the 32×32 field with zeros (§II.B)."""
    h, w = x.shape[-2], x.shape[-1]
    if h == 32 and w == 32:
        return x
    if h > 32 or w > 32:
        raise ValueError(f"LeNet-5 reads images up to 32x32, got {h}x{w}")
    top, left = (32 - h) // 2, (32 - w) // 2
    return F.pad(x, [left, 32 - w - left, top, 32 - h - top])


# Its branch reads the input's size: torch.fx records the call instead of tracing into it.
torch.fx.wrap("pad_to_32")


@register_model(
    ModelCfg(
        family="lenet",
        paper=PAPER,
        input_size=(1, 32, 32),
        num_classes=10,
        min_input_size=(1, 1, 1),  # smaller images are zero-padded to 32×32
        fixed_input_size=True,
        pool_size=(5, 5),  # the 32×32 field: S4's maps, whatever the image size
        first_conv="features.0",
        data="mnist",
    )
)
def lenet5(
    *, num_classes: int = 10, in_chans: int = 1, activation: str = "relu", pool: str = "max"
) -> LeNet5:
    """LeNet-5 (LeCun et al. 1998, Fig. 2); 61,706 params at 1 channel, 10 classes."""
    return LeNet5(num_classes=num_classes, in_chans=in_chans, activation=activation, pool=pool)
