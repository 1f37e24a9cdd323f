"""The API every zoo model shares (timm's): features, head, classifier access and reset, global
pooling, gradient checkpointing and feature extraction (``feature_info``, ``forward_intermediates``,
``FeatureNet``).

The model files do not use ``from __future__ import annotations``: ``torch.jit.script`` and the
code ``torch.fx`` generates read the annotations as objects, not strings.
"""

from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "")


class GlobalPool(nn.Module):
    """Global pooling of an N×C×H×W map to N×C (timm's ``SelectAdaptivePool2d`` with flatten).

    ``"avg"``, ``"max"``, ``"avgmax"`` (their mean), ``"catavgmax"`` (both, concatenated: 2C
    features) or ``""``: no pooling, the map passes unchanged.
    """

    __jit_unused_properties__ = ["feat_mult"]  # Python-side only

    def __init__(self, pool_type: str = "avg") -> None:
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {pool_type!r}")
        self.pool_type = pool_type

    @property
    def feat_mult(self) -> int:
        """Features per input channel: 2 for ``"catavgmax"``, else 1."""
        return 2 if self.pool_type == "catavgmax" else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "":
            return x
        if self.pool_type == "avg":
            return x.mean((2, 3))
        if self.pool_type == "max":
            return x.amax((2, 3))
        if self.pool_type == "avgmax":
            return 0.5 * (x.mean((2, 3)) + x.amax((2, 3)))
        return torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"


class ZooModel(nn.Module):
    """Mixin base: subclasses implement the methods below; ``forward`` chains the first two.

    - ``forward_features(x)``: the last feature map before pooling, ``num_features`` channels.
    - ``forward_head(x, pre_logits=False)``: pool/flatten (+ hidden layers, dropout) and the
      classifier; ``pre_logits=True`` returns the ``head_hidden_size`` vector the classifier reads.
    - ``get_classifier()``: the final layer module.
    - ``reset_classifier(num_classes, global_pool=None)``: a fresh final layer for ``num_classes``
      outputs (``0`` makes it an identity, returning pre-logits) and, where the model pools
      globally before its head, another pooling (``""``: none, the unpooled map).
    - ``set_grad_checkpointing(enable=True)``: recompute activations in backward instead of
      storing them.
    - ``feature_info``: one dict per feature map ``forward_intermediates`` can return, in forward
      order: ``num_chs``, ``reduction`` (the total stride) and ``module`` (where it is computed).
    - ``forward_intermediates(x, indices, norm, stop_early, output_fmt, intermediates_only)``:
      those feature maps (timm's signature).

    ``num_features`` and ``head_hidden_size`` have timm's (≥ 1.0) meanings: the channels of
    ``forward_features``' output and the width of the vector the classifier reads.
    """

    # What TorchScript need not compile: Python-side descriptions, never read by forward.
    __jit_ignored_attributes__ = ["feature_info", "pretrained_cfg", "default_cfg"]
    __jit_unused_properties__ = ["head_hidden_size"]

    num_classes: int
    num_features: int
    classifier_name = "fc"  # the attribute holding the final layer, for the defaults below
    head_modules: tuple[str, ...] = ("fc",)  # only used by forward_head (dropped for features)

    def __init__(self) -> None:
        super().__init__()
        self.grad_checkpointing = False  # an instance attribute, so that TorchScript sees it

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    @property
    def head_hidden_size(self) -> int:
        """Width of the vector the classifier reads (``forward_head(x, pre_logits=True)``)."""
        return self.num_features * self.global_pool.feat_mult

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature maps at ``indices`` of ``feature_info`` (timm's semantics: ``None`` all,
        an int the last n, a sequence those; negative indices count from the end) and, unless
        ``intermediates_only``, ``forward_features``' output first. ``stop_early`` stops the
        forward at the last feature asked for, which then stands for that output.

        timm's signature: the maps are those the forward computes, so ``norm`` (an extra final
        norm in timm's transformers) changes nothing, and ``output_fmt`` can only be "NCHW"."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r}: the zoo's feature maps are NCHW")
        take = feature_take_indices(len(self.feature_info), indices)
        intermediates: list[torch.Tensor] = []
        for i, feature in enumerate(self.iter_features(x)):
            if i == len(self.feature_info):
                return feature, intermediates
            if i in take:
                intermediates.append(feature)
            if i == take[-1] and (stop_early or intermediates_only):
                return intermediates if intermediates_only else (feature, intermediates)
        raise RuntimeError(f"{type(self).__name__}.iter_features yielded too few maps")

    def iter_features(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Every ``feature_info`` map in forward order, then ``forward_features``' output; the
        forward stops where the caller stops iterating."""
        raise NotImplementedError

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] | None = None, prune_head: bool = True
    ) -> list[int]:
        """timm's name: drop the head (and GoogLeNet's auxiliary heads) for feature extraction;
        returns the absolute feature indices ``indices`` selects."""
        take = feature_take_indices(len(self.feature_info), indices)
        if prune_head:
            self.reset_classifier(0)
            for name in self.head_modules:
                setattr(self, name, nn.Identity())
        return take

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier for ``num_classes`` outputs (``0``: none, ``forward`` returns the
        pre-logits); ``global_pool`` (``"avg"``, ``"max"``, ``"avgmax"``, ``"catavgmax"``, or
        ``""`` for the unpooled map, which needs ``num_classes=0``) replaces the pooling before
        the head, ``None`` keeps it."""
        if global_pool is not None:
            self.set_global_pool(global_pool, num_classes)
        self.num_classes = num_classes
        self.set_classifier(make_linear_head(self.head_hidden_size, num_classes))

    def set_global_pool(self, pool_type: str, num_classes: int) -> None:
        """The pooling before the head (``reset_classifier``'s ``global_pool``)."""
        check_global_pool(pool_type, num_classes)
        self.global_pool = GlobalPool(pool_type)

    def set_classifier(self, head: nn.Module) -> None:
        """Put ``head`` where the final layer lives (``reset_classifier``)."""
        setattr(self, self.classifier_name, head)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward instead of storing them (timm's switch): each stage
        or block runs under ``torch.utils.checkpoint`` while training with gradients; outputs,
        gradients and BatchNorm running statistics are those of the plain forward."""
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ConvStackModel(ZooModel):
    """A plain conv stack ``features`` (AlexNet, VGG) and, in torchvision's layout, a head
    that averages the map to a fixed grid (``avgpool``) and reads it flattened into fully
    connected layers (``classifier``, whose last layer is the classifier). Such a head has no
    global pooling to change: ``global_pool`` is refused, ``forward_features`` gives the map.
    Gradient checkpointing recomputes the stack stage by stage (cut after each pooling layer)."""

    head_modules: tuple[str, ...] = ("avgpool", "classifier")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(stack_stages(self.features), x)
        return self.features(x)

    def iter_features(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        x = yield from iter_stack(self.features, x, feature_modules(self.feature_info), "features")
        yield x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.forward_flattened(x, pre_logits)

    def forward_flattened(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        if not pre_logits:
            return self.classifier(x)
        last = len(self.classifier) - 1
        for i, layer in enumerate(self.classifier):  # all but the classifier (TorchScript's way)
            if i < last:
                x = layer(x)
        return x

    def get_classifier(self) -> nn.Module:
        return self.classifier[-1]

    def set_classifier(self, head: nn.Module) -> None:
        self.classifier[-1] = head

    def set_global_pool(self, pool_type: str, num_classes: int) -> None:
        size = self.avgpool.output_size
        raise no_global_pool(
            self,
            pool_type,
            f"its fully connected layers read the {size[0]}x{size[1]} map flattened "
            "(torchvision's layout)",
            "forward_features(x) gives the unpooled map",
        )


def check_global_pool(pool_type: str, num_classes: int) -> None:
    """``ValueError`` for no pooling in front of a linear classifier (``GlobalPool`` refuses
    unknown pooling types)."""
    if pool_type == "" and num_classes > 0:
        raise ValueError(
            "global_pool='' leaves the feature map unpooled, which a linear classifier cannot "
            "read: pass num_classes=0 too"
        )


def no_global_pool(model: nn.Module, pool_type: str, reason: str, alternative: str) -> ValueError:
    """The one-line error of a model whose head cannot take the pooling ``pool_type``."""
    return ValueError(
        f"{type(model).__name__}: global_pool={pool_type!r} is not possible: {reason}; "
        f"{alternative}"
    )


@contextmanager
def frozen_running_stats(norms: Iterable[nn.Module]):
    """BatchNorm layers that normalise with batch statistics but leave running ones unchanged."""
    saved = [(n, n.momentum, n.num_batches_tracked.clone()) for n in norms]
    for n, _, _ in saved:
        n.momentum = 0.0
    try:
        yield
    finally:
        for n, momentum, tracked in saved:
            n.momentum = momentum
            n.num_batches_tracked.copy_(tracked)


def batch_norms(module: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers in ``module`` that track running statistics."""
    return [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def checkpoint(
    fn: Callable[..., torch.Tensor], norms: Iterable[nn.Module], *inputs: torch.Tensor
) -> torch.Tensor:
    """``fn(*inputs)`` with its activations recomputed in backward (``torch.utils.checkpoint``,
    non-reentrant; dropout masks repeat, as the RNG state is restored).

    The recomputation normalises with batch statistics as the first call did but leaves the
    running statistics of ``norms`` unchanged: a checkpointed training step updates them once.
    """
    if not torch.is_grad_enabled():
        return fn(*inputs)
    norms = list(norms)
    first_call = True

    def run(*args: torch.Tensor) -> torch.Tensor:
        nonlocal first_call
        if first_call:
            first_call = False
            return fn(*args)
        with frozen_running_stats(norms):
            return fn(*args)

    return torch.utils.checkpoint.checkpoint(run, *inputs, use_reentrant=False)


def checkpoint_seq(modules: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Run ``modules`` in order, each one checkpointed (timm's ``checkpoint_seq`` with
    ``every=1``): backward keeps only each module's input, which no module may change in place
    (an in-place ReLU belongs inside a piece, not at its start)."""
    for module in modules:
        x = checkpoint(module, batch_norms(module), x)
    return x


def stack_stages(layers: nn.Sequential) -> list[nn.Sequential]:
    """A plain conv stack (LeNet, AlexNet, VGG) cut after each pooling layer: the segments that
    gradient checkpointing recomputes."""
    stages: list[nn.Sequential] = []
    current: list[nn.Module] = []
    for module in layers:
        current.append(module)
        if isinstance(module, _POOLS):
            stages.append(nn.Sequential(*current))
            current = []
    if current:
        stages.append(nn.Sequential(*current))
    return stages


@contextmanager
def eval_mode(model: nn.Module) -> Generator[nn.Module, None, None]:
    """``model`` in eval mode (BatchNorm running statistics, no dropout); its mode restored."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def main_output(out: torch.Tensor | tuple) -> torch.Tensor:
    """The main logits of a forward pass: GoogLeNet in training returns (main, aux2, aux1)."""
    return out[0] if isinstance(out, tuple) else out


def make_linear_head(in_features: int, num_classes: int) -> nn.Module:
    """A Linear classifier, or ``Identity`` for ``num_classes == 0`` (timm's convention)."""
    return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()


def fc_head(
    in_features: int, hidden: int, num_classes: int, dropout: float, dropout_first: bool
) -> nn.Sequential:
    """The flattened-grid head of AlexNet and VGG: two FC-``hidden`` layers with ReLU and dropout,
    then the classifier. ``dropout_first`` puts each dropout before its FC layer (AlexNet,
    torchvision's ``classifier.1/4/6``) instead of after its ReLU (VGG, ``classifier.0/3/6``)."""
    layers: list[nn.Module] = []
    for width in (in_features, hidden):
        fc = [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        drop = [nn.Dropout(p=dropout)]
        layers += drop + fc if dropout_first else fc + drop
    return nn.Sequential(*layers, make_linear_head(hidden, num_classes))


def feature_take_indices(num_features: int, indices: int | Sequence[int] | None) -> list[int]:
    """Absolute, sorted feature indices: ``None`` all, an int ``n`` the last n, a sequence those
    (negative from the end); ``ValueError`` for an index out of range (timm's helper)."""
    if indices is None:
        return list(range(num_features))
    if isinstance(indices, int):
        if not 0 < indices <= num_features:  # an empty selection would return nothing
            raise ValueError(f"indices={indices}: ask for 1 to {num_features} last features")
        return list(range(num_features - indices, num_features))
    take = []
    for i in indices:
        if not -num_features <= i < num_features:
            raise ValueError(
                f"feature index {i} out of range: this model has {num_features} features "
                f"(0..{num_features - 1}, or -{num_features}..-1 from the end)"
            )
        take.append(i % num_features)
    if not take:
        raise ValueError("out_indices/indices is empty: ask for at least one feature")
    return sorted(set(take))


def stack_feature_info(layers: nn.Sequential, prefix: str) -> list[dict[str, Any]]:
    """``feature_info`` of a plain conv stack (LeNet, AlexNet, VGG): the activation before each
    pooling layer and the last pooling layer's output, with their channels and total stride."""
    info: list[dict[str, Any]] = []
    channels, reduction = 0, 1
    children = list(layers.named_children())
    for i, (name, module) in enumerate(children):
        if isinstance(module, nn.Conv2d):
            channels = module.out_channels
        stride = getattr(module, "stride", 1)
        reduction *= stride[0] if isinstance(stride, tuple) else stride
        pooled_next = i + 1 < len(children) and isinstance(children[i + 1][1], _POOLS)
        if pooled_next or (i == len(children) - 1 and isinstance(module, _POOLS)):
            info.append({"num_chs": channels, "reduction": reduction, "module": f"{prefix}.{name}"})
    return info


_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def iter_stack(
    layers: nn.Sequential, x: torch.Tensor, taps: set[str], prefix: str
) -> Generator[torch.Tensor, None, torch.Tensor]:
    """Run ``layers``, yielding the outputs of the children named in ``taps``; returns the last."""
    for name, module in layers.named_children():
        x = module(x)
        if f"{prefix}.{name}" in taps:
            yield x
    return x


def feature_modules(feature_info: list[dict[str, Any]]) -> set[str]:
    return {d["module"] for d in feature_info}


class FeatureInfo:
    """The ``feature_info`` of the selected features (timm's class and accessors)."""

    def __init__(self, feature_info: list[dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = [dict(feature_info[i], index=i) for i in out_indices]
        self.out_indices = tuple(out_indices)

    def get_dicts(self) -> list[dict[str, Any]]:
        return [dict(d) for d in self.info]

    def get(self, key: str, idx: int | None = None) -> Any:
        return [d[key] for d in self.info] if idx is None else self.info[idx][key]

    def channels(self, idx: int | None = None) -> list[int] | int:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | None = None) -> list[int] | int:
        return self.get("reduction", idx)

    def module_name(self, idx: int | None = None) -> list[str] | str:
        return self.get("module", idx)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.info[idx]

    def __len__(self) -> int:
        return len(self.info)


class FeatureNet(nn.Module):
    """``create_model(name, features_only=True, out_indices=...)``: the model without its head,
    whose forward returns the list of selected feature maps (timm's ``FeatureGetterNet``)."""

    def __init__(self, model: ZooModel, out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self.out_indices = model.prune_intermediate_layers(out_indices, prune_head=True)
        self.model = model
        self.feature_info = FeatureInfo(model.feature_info, self.out_indices)
        cfg = getattr(model, "pretrained_cfg", None)
        if cfg is not None:  # the model's, with this wrapper's state-dict names
            cfg = {**cfg, "first_conv": f"model.{cfg['first_conv']}", "classifier": ()}
            self.pretrained_cfg = self.default_cfg = cfg

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(
            x, indices=self.out_indices, stop_early=True, intermediates_only=True
        )
