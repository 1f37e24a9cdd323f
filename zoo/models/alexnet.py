"""AlexNet.

Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional Neural Networks",
NeurIPS 2012, §3.5 and Fig. 2: five conv layers (11×11/4, 5×5, three 3×3) with max pooling and
three fully connected layers with dropout 0.5. ``alexnet`` is the single-GPU variant that
torchvision ships (64/192/384/256/256 filters, after Krizhevsky's "One weird trick",
arXiv:1404.5997), with its exact module layout: 61,100,840 parameters.

``alexnet_cifar`` keeps the five-conv/three-FC design for 28–32 px images: a 3×3 stride-1 first conv
instead of 11×11/4 (which would leave a 32 px image at 1×1 after the pools), 2×2 pools, a 2×2
adaptive pool and 1024-wide FC layers.
"""

from torch import nn

from zoo.models.base import ConvStackModel, fc_head, stack_feature_info
from zoo.models.registry import ModelCfg, imagenet_cfg, register_model

PAPER = (
    "ImageNet Classification with Deep Convolutional Neural Networks "
    "(Krizhevsky et al., NeurIPS 2012)"
)


class AlexNet(ConvStackModel):
    """``features`` (convs + pools), ``avgpool`` and ``classifier`` as in torchvision.

    Features: the activation before each pool (strides 4, 8, 16 at 224 px) and the last pool (32).
    ``forward_features`` gives 256 maps (``num_features``); the head averages them to a fixed
    grid (6×6, or 2×2 for small inputs) and reads it flattened into FC layers of
    ``head_hidden_size`` units, so there is no global pooling to change: ``reset_classifier``'s
    ``global_pool`` is refused.
    """

    def __init__(
        self,
        features: nn.Sequential,
        pool_size: int,
        hidden: int,
        num_classes: int = 1000,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.features = features
        self.feature_info = stack_feature_info(features, "features")
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.num_features = 256
        self.hidden = hidden
        self.num_classes = num_classes
        self.classifier = fc_head(
            256 * pool_size * pool_size, hidden, num_classes, dropout, dropout_first=True
        )

    @property
    def head_hidden_size(self) -> int:
        return self.hidden


def create_alexnet(
    *, small_input: bool, num_classes: int, in_chans: int, dropout: float
) -> AlexNet:
    """The five convolutions of Fig. 2 (single-GPU widths) with max pools, and the FC head.

    ``small_input``: a 3×3/1 first conv, 2×2 pools, a 2×2 adaptive pool and FC 1024.
    """
    if small_input:
        first, pool_args, pool_size, hidden = nn.Conv2d(in_chans, 64, 3, padding=1), (2, 2), 2, 1024
    else:
        first = nn.Conv2d(in_chans, 64, kernel_size=11, stride=4, padding=2)
        pool_args, pool_size, hidden = (3, 2), 6, 4096
    features = nn.Sequential(
        first,
        nn.ReLU(inplace=True),
        nn.MaxPool2d(*pool_args),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(*pool_args),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(*pool_args),
    )
    return AlexNet(
        features, pool_size=pool_size, hidden=hidden, num_classes=num_classes, dropout=dropout
    )


LAYOUT = {"first_conv": "features.0", "classifier": "classifier.6"}


@register_model(
    imagenet_cfg(
        "alexnet",
        PAPER,
        min_input_size=(3, 63, 63),
        pool_size=(6, 6),
        torchvision="alexnet",
        **LAYOUT,
    )
)
def alexnet(*, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.5) -> AlexNet:
    """AlexNet (Krizhevsky et al. 2012, Fig. 2; torchvision layout): 61,100,840 params."""
    return create_alexnet(
        small_input=False, num_classes=num_classes, in_chans=in_chans, dropout=dropout
    )


@register_model(
    ModelCfg(
        family="alexnet",
        paper=PAPER,
        input_size=(3, 32, 32),
        num_classes=10,
        min_input_size=(3, 8, 8),
        pool_size=(4, 4),
        data="cifar10",
        **LAYOUT,
    )
)
def alexnet_cifar(*, num_classes: int = 10, in_chans: int = 3, dropout: float = 0.5) -> AlexNet:
    """AlexNet for 28–32 px images: 3×3/1 first conv, 2×2 pools, FC 1024 (see module docstring)."""
    return create_alexnet(
        small_input=True, num_classes=num_classes, in_chans=in_chans, dropout=dropout
    )
