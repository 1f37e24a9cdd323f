"""Models for whole-network tests (export, torch.compile): one small-input model per family."""

from __future__ import annotations

import torch
from torch import nn

from zoo.models.registry import get_model_entry

# The very large ImageNet models: built once each in their family tests (whose code the smaller
# members also run); a CPU forward of every one in the whole-registry tests would dominate the
# suite's time on 2 cores without testing anything new.
HEAVY = {
    "vgg13",
    "vgg16",
    "vgg19",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
    "resnet101",
    "resnet152",
    "densenet161",
    "densenet169",
    "densenet201",
}

# Each family's small-input model (CIFAR/MNIST size); the ODE family exports through RK-Net
# (fixed-step RK4), ODE-Net's adaptive dopri5 has tests of its own.
SMALL_MODELS = (
    "lenet5",
    "alexnet_cifar",
    "vgg11_bn_cifar",
    "googlenet_cifar",
    "resnet20",
    "resnet20_noshort",
    "densenet_bc100_k12",
    "cliquenet_k36_t12_ac",
    "rknet_mnist",
    "resnet_mnist",
)


def trained_like(model: nn.Module, input_size: tuple[int, ...], seed: int = 0) -> nn.Module:
    """``model`` in eval mode with He-initialised weights, random normalisation affines and
    BatchNorm statistics measured on random batches: every layer's output is of order one and
    depends on the input.

    A fresh model is a weak witness: its BatchNorm layers have mean 0, variance 1, weight 1 and
    bias 0 (an exporter or compiler that drops or mis-folds one would still match), and some
    (GoogLeNet's, AlexNet's std-0.01 initialisations) shrink the features to 1e-9, leaving logits
    nearly equal to the classifier's bias whatever the input.
    """
    generator = torch.Generator().manual_seed(seed)
    norm_types = nn.modules.batchnorm._NormBase | nn.GroupNorm
    norms = [m for m in model.modules() if isinstance(m, norm_types)]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):  # He et al. 2015: variance kept
                fan_in = module.weight[0].numel()
                shape = module.weight.shape
                module.weight.copy_(torch.randn(shape, generator=generator) * (2 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
        for module in norms:
            if module.weight is not None:
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            if isinstance(module, nn.modules.batchnorm._NormBase):
                module.reset_running_stats()
                module.momentum = None  # a cumulative average over the calibration batches
        model.train()
        for _ in range(2):
            model(torch.randn(8, *input_size, generator=generator))
        for module in norms:
            if isinstance(module, nn.modules.batchnorm._NormBase):
                module.momentum = 0.1
    return model.eval()


def shape_device(name: str) -> str:
    """Where a forward that only checks shapes runs: the meta device (no values, fast), or the
    CPU for the ODE models, whose solvers' step-size control reads values."""
    return "cpu" if get_model_entry(name).cfg.family == "odenet" else "meta"
