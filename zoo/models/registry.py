"""Model registry: ``@register_model`` builders and the facts each model declares as data.

Every builder is a plain function with explicit keyword arguments (``num_classes``, ``in_chans`` and
the family's options), registered under its own name together with a ``ModelCfg``: input size,
smallest accepted input, normalisation, first convolution and classifier, the torchvision/timm
model it mirrors, the paper's printed numbers and how to convert foreign checkpoints (timm's
``default_cfgs``/``pretrained_filter_fn``, torchvision's ``Weights.meta``). Tables, the comparison
and the weights adaptation read these records; nothing else keeps lists of model names.

This module is the lowest layer: the families import it, it imports none of them (importing
``zoo`` registers every family, see ``zoo.weights.factory``).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import inspect
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "DATA_STATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelCfg",
    "ModelEntry",
    "PaperNumbers",
    "PretrainedTag",
    "DROPOUT_OPTIONS",
    "build_model",
    "cache_filename",
    "check_builder_value",
    "check_input_size",
    "count_params",
    "get_model_entry",
    "imagenet_cfg",
    "is_model",
    "model_names",
    "num_params",
    "pretrained_cfg",
    "register_model",
]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Per-channel mean and std of the training images of the data each record's defaults are made for
# (the published values of the full training sets), the normalisation of a model without weights.
DATA_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet-1k": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist": ((0.1307,), (0.3081,)),
}
# How the zoo's data modules feed images: the whole image, resized (bilinear) to the model's
# size without keeping the aspect ratio (zoo.data's image folders), then scaled to [0, 1].
ZOO_CROP = {"crop_pct": 1.0, "crop_mode": "squash", "interpolation": "bilinear"}


@dataclass(frozen=True)
class PaperNumbers:
    """A model's results as its paper prints them: errors in %, parameters in millions.

    ``builder_kwargs`` are the options that give the paper's model when our defaults differ (He et
    al. count their CIFAR ResNets with option-A shortcuts).
    """

    source: str  # paper and table, e.g. "He et al. 2016, Table 6 (C10+)"
    params_m: float | None = None
    cifar10_error: float | None = None
    cifar100_error: float | None = None
    imagenet_top1_error: float | None = None
    imagenet_top5_error: float | None = None
    mnist_error: float | None = None
    builder_kwargs: Mapping[str, Any] = field(default_factory=dict)
    params_exact: bool = True  # False: our count does not round to params_m (``note`` says why)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The fields that are set (differ from their defaults)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            or getattr(self, f.name) not in (f.default, {})
        }


@dataclass(frozen=True)
class PretrainedTag:
    """Where a set of weights comes from and what it was trained on."""

    source: str  # a URL, or a path relative to the repository's weights/ folder
    dataset: str
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sha256: str | None = None  # full hash, or the prefix torchvision puts in its file names
    metrics: dict[str, float] = field(default_factory=dict)
    notes: str = ""
    cache_name: str | None = None  # for URLs without a usable file name (Google Drive)
    # the evaluation preprocessing the weights were measured with (timm's fields)
    crop_pct: float = ZOO_CROP["crop_pct"]
    crop_mode: str = ZOO_CROP["crop_mode"]
    interpolation: str = ZOO_CROP["interpolation"]
    license: str | None = None
    pool_size: tuple[int, int] | None = None  # forward_features' map at input_size, if known

    @property
    def filename(self) -> str:
        """The file's name in the hub cache (where to place it by hand)."""
        return self.cache_name or cache_filename(self.source)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "filename": self.filename}


def cache_filename(url: str) -> str:
    """The URL's file name; Hugging Face repositories all call theirs ``model.safetensors``, so
    those get the repository in front (``timm--resnet50.a1_in1k--model.safetensors``)."""
    path = url.split("?")[0].rstrip("/")
    hf = re.match(r"^https://huggingface\.co/([^/]+)/([^/]+)/resolve/[^/]+/(.+)$", path)
    if hf:
        return "--".join(hf.groups()).replace("/", "--")
    return path.split("/")[-1]


StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModelCfg:
    """What a model declares at registration (timm's pretrained cfg, torchvision's weights meta).

    ``first_conv`` and ``classifier`` are module names in the state dict (``"conv1"`` for
    ``conv1.weight``); GoogLeNet lists its auxiliary classifiers too. ``pool_size`` is the
    (H, W) of ``forward_features``' output at ``input_size`` (timm's field; ``None`` where that
    output is already pooled), checked against the forward in tests/test_timm_contract.py.
    ``min_input_size`` is the smallest (C, H, W) the forward accepts (measured, see
    tests/test_input_size.py).
    ``mean``/``std`` are what the ImageNet reference weights expect (``None``: the training data's
    own statistics; ``data`` names the data set the defaults are made for, whose statistics
    ``pretrained_cfg`` gives a model without weights).
    ``pretrained_filter_fn`` maps foreign checkpoint layouts onto ours; ``pretrained_optional``
    lists key prefixes a checkpoint may carry that a model built without them lacks.
    """

    family: str
    paper: str  # title (authors, venue, arXiv id)
    input_size: tuple[int, int, int]
    num_classes: int
    min_input_size: tuple[int, int, int] | None = None
    fixed_input_size: bool = False  # True: larger inputs are refused (timm's field)
    pool_size: tuple[int, int] | None = None  # forward_features' map at input_size; None: pooled
    first_conv: str = "conv1"
    classifier: str | tuple[str, ...] = "fc"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    data: str = "imagenet-1k"  # a key of DATA_STATS
    torchvision: str | None = None  # torchvision.models name with the same layout
    timm: str | None = None  # timm model name with the same layout
    reference: str = ""  # the public code it mirrors when neither library has it
    paper_numbers: PaperNumbers | None = None
    weights: Mapping[str, PretrainedTag] = field(default_factory=dict)  # tags hosted elsewhere
    pretrained_filter_fn: Callable[[StateDict], StateDict] | None = None
    pretrained_optional: tuple[str, ...] = ()
    architecture: str = ""  # the registered name (set by register_model)

    @property
    def classifiers(self) -> tuple[str, ...]:
        return (self.classifier,) if isinstance(self.classifier, str) else tuple(self.classifier)


def imagenet_cfg(family: str, paper: str, **fields: Any) -> ModelCfg:
    """A model made for ImageNet-1k: 224 px, 1,000 classes, the ImageNet mean and std, and
    ``fields`` (the layout's names, its torchvision/timm twins, the paper's numbers, …)."""
    defaults = {
        "input_size": (3, 224, 224),
        "num_classes": 1000,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
    }
    return ModelCfg(family=family, paper=paper, **{**defaults, **fields})


@dataclass(frozen=True)
class ModelEntry:
    """A registered name: its builder and its data."""

    name: str
    builder: Callable[..., nn.Module]
    cfg: ModelCfg

    @property
    def family(self) -> str:
        return self.cfg.family

    @property
    def accepted_kwargs(self) -> list[str]:
        params = inspect.signature(self.builder).parameters.values()
        return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


_REGISTRY: dict[str, ModelEntry] = {}
_NUM_PARAMS_CACHE: dict[str, int] = {}


def register_model(
    cfg: ModelCfg | None = None, /, **fields: Any
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under its function name with its ``ModelCfg``.

    ``@register_model(cfg)`` with a record, or ``@register_model(family=..., paper=...,
    input_size=..., num_classes=...)`` with its fields (``fields`` also override ``cfg``'s).
    Registering the same name twice is an error: it would silently shadow a model.
    """
    cfg = ModelCfg(**fields) if cfg is None else dataclasses.replace(cfg, **fields)

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        sig = inspect.signature(builder)
        for required in ("num_classes", "in_chans"):
            if required not in sig.parameters:
                raise TypeError(f"builder {name}() must accept a {required!r} keyword argument")
        entry_cfg = dataclasses.replace(cfg, architecture=name, input_size=tuple(cfg.input_size))
        _REGISTRY[name] = ModelEntry(name=name, builder=builder, cfg=entry_cfg)
        return builder

    return decorator


def is_model(name: str) -> bool:
    return name in _REGISTRY


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; ``ValueError`` naming the closest names if unknown."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"did you mean: {', '.join(close)}?" if close else "see zoo.list_models()"
        raise ValueError(f"unknown model {name!r}; {hint}") from None


def model_names(pattern: str = "*") -> list[str]:
    """Registered names matching the fnmatch ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


# Builder options of the zoo's models that set a dropout probability.
DROPOUT_OPTIONS = ("drop_rate", "dropout", "dropout_aux")
COUNT_MINIMUM = {"num_classes": 0, "in_chans": 1}  # num_classes=0: no classifier (timm's features)


def check_builder_value(what: str, key: str, value: Any, minimum: int | None = None) -> Any:
    """``value`` of builder option ``key`` if valid, else a one-line ``ValueError`` naming ``what``.

    ``num_classes``/``in_chans`` are integers >= ``minimum`` (default: 0 and 1; never truncated),
    the dropout options probabilities in [0, 1). ``create_model`` and the trainer both check with
    this (``what`` is ``"resnet20(): num_classes"`` or ``"model.num_classes"``).
    """
    if key in COUNT_MINIMUM:
        least = COUNT_MINIMUM[key] if minimum is None else minimum
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ValueError(f"{what} must be an integer >= {least}, got {value!r}")
        return int(value)
    if key in DROPOUT_OPTIONS and (
        isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1
    ):
        raise ValueError(f"{what} must be a probability in [0, 1), got {value!r}")
    return value


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Call ``name``'s builder after checking the arguments against its signature.

    A misspelt option fails at once (``TypeError`` naming the accepted ones) instead of deep
    inside ``__init__``; ``num_classes < 0``, ``in_chans < 1``, non-integers and dropout
    probabilities outside [0, 1) are a ``ValueError`` (:func:`check_builder_value`).
    The model carries ``pretrained_cfg`` and ``default_cfg`` (timm's attributes, see
    ``pretrained_cfg``); the record stays in the registry (``get_model_entry(name).cfg``).
    """
    entry = get_model_entry(name)
    accepted = entry.accepted_kwargs
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"{name}() got unexpected argument(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted)}"
        )
    kwargs = {
        k: check_builder_value(f"{name}(): {k}", k, v)
        for k, v in kwargs.items()
        if v is not None or k not in COUNT_MINIMUM
    }
    model = entry.builder(**kwargs)
    model.pretrained_cfg = model.default_cfg = pretrained_cfg(model, entry.cfg)
    return model


def pretrained_cfg(
    model: nn.Module, cfg: ModelCfg, tag: PretrainedTag | None = None, tag_name: str | None = None
) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` (also ``default_cfg``) of ``model``, built as ``cfg.architecture``:
    a plain dict with timm's keys, so that ``timm.data.resolve_data_config(model=model)`` and
    ``timm.data.create_transform(**config)`` give the preprocessing the model expects.

    With a tag (the weights loaded), its input size, normalisation and evaluation crop; without,
    the record's input size and normalisation (``cfg.mean``, else ``DATA_STATS[cfg.data]``) and
    the zoo's own pipeline (the whole image, bilinear). Channels follow the model's first
    convolution (statistics averaged or repeated when it was adapted); ``num_classes`` and
    ``classifier`` are the model's own; ``pool_size`` is the size of ``forward_features``' map at
    ``input_size`` (``None`` where that output is pooled).
    """
    stats = (cfg.mean, cfg.std) if cfg.mean is not None else DATA_STATS[cfg.data]
    source = tag or PretrainedTag(
        source="",
        dataset=cfg.data,
        num_classes=cfg.num_classes,
        input_size=cfg.input_size,
        mean=stats[0],
        std=stats[1],
    )
    weight = model.state_dict().get(f"{cfg.first_conv}.weight")
    chans = int(weight.shape[1]) if weight is not None else source.input_size[0]
    input_size = (chans, *source.input_size[1:])
    out: dict[str, Any] = {"architecture": cfg.architecture}
    if tag is not None:
        out["tag"] = tag_name
        out["url" if "://" in tag.source else "file"] = tag.source
    out.update(
        input_size=input_size,
        fixed_input_size=cfg.fixed_input_size,
        interpolation=source.interpolation,
        crop_pct=source.crop_pct,
        crop_mode=source.crop_mode,
        mean=_channels(source.mean, chans),
        std=_channels(source.std, chans),
        num_classes=int(getattr(model, "num_classes", cfg.num_classes)),
        pool_size=_pool_size(cfg, tag, input_size),
        first_conv=cfg.first_conv,
        classifier=model_classifiers(model, cfg),
        paper_name=cfg.paper,
    )
    if cfg.min_input_size is not None:
        out["min_input_size"] = (chans, *cfg.min_input_size[1:])
    if source.license:
        out["license"] = source.license
    return out


def _channels(values: Sequence[float], chans: int) -> tuple[float, ...]:
    """Per-channel statistics for ``chans`` channels: as they are, repeated from one channel, or
    their mean for one channel (the zoo sums an RGB first convolution for grey input)."""
    values = tuple(float(v) for v in values)
    if len(values) == chans:
        return values
    if len(values) == 1:
        return values * chans
    return (sum(values) / len(values),) * chans


def model_classifiers(model: nn.Module, cfg: ModelCfg) -> str | tuple[str, ...]:
    """The final classifier layers of ``model``: the record's main one and the auxiliary heads
    the model has (GoogLeNet's, when built with them)."""
    aux = tuple(getattr(model, "aux_classifiers", ()))
    return (cfg.classifiers[0], *aux) if aux else cfg.classifiers[0]


def _pool_size(
    cfg: ModelCfg, tag: PretrainedTag | None, input_size: tuple[int, ...]
) -> tuple[int, int] | None:
    """``forward_features``' map size at ``input_size``: the tag's or the record's where they
    declare it for that size, else measured once (a forward of one image)."""
    if tag is not None and tag.pool_size is not None:
        return tuple(tag.pool_size)
    if tuple(input_size[1:]) == tuple(cfg.input_size[1:]):
        return cfg.pool_size
    return feature_map_size(cfg.architecture, tuple(input_size))


@functools.cache
def feature_map_size(name: str, input_size: tuple[int, int, int]) -> tuple[int, int] | None:
    """(H, W) of ``forward_features``' output for one image of ``input_size``, or ``None`` where
    that output is already pooled (CliqueNet); measured on a freshly built model."""
    model = get_model_entry(name).builder(in_chans=input_size[0]).eval()
    with torch.no_grad():
        out = model.forward_features(torch.zeros(1, *input_size))
    return tuple(int(v) for v in out.shape[-2:]) if out.ndim == 4 else None


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def num_params(name: str, **kwargs: Any) -> int:
    """Parameters of ``name`` built with ``kwargs``, counted on the meta device (no memory)."""
    key = f"{name}{sorted(kwargs.items())}"
    if key not in _NUM_PARAMS_CACHE:
        with torch.device("meta"):
            _NUM_PARAMS_CACHE[key] = count_params(build_model(name, **kwargs))
    return _NUM_PARAMS_CACHE[key]


def check_input_size(model_or_name: nn.Module | str, input_size: Sequence[int]) -> None:
    """``ValueError`` (one line) if a (C, H, W) input is smaller than the model accepts (or,
    for a model with a fixed input size, larger).

    With a model built by ``create_model`` the channels are checked against its first convolution
    too; with a name only the height and width (``create_model`` adapts ``in_chans``).
    """
    if isinstance(model_or_name, str):
        cfg, model = get_model_entry(model_or_name).cfg, None
    else:
        model = model_or_name
        name = getattr(model, "pretrained_cfg", {}).get("architecture")
        if not isinstance(name, str) or not is_model(name):
            raise ValueError(
                f"{type(model).__name__} carries no zoo model record: build it with "
                "zoo.create_model or pass the model's name"
            )
        cfg = get_model_entry(name).cfg
    size = tuple(int(v) for v in input_size)
    if len(size) != 3:
        raise ValueError(f"input size must be (C, H, W), got {tuple(input_size)}")
    c, h, w = size
    name = cfg.architecture
    if model is not None:  # a features_only wrapper names the layer its own way
        weight = model.state_dict().get(f"{model.pretrained_cfg['first_conv']}.weight")
        if weight is not None and weight.shape[1] != c:
            raise ValueError(
                f"{name} reads {weight.shape[1]}-channel images, the input has {c} channels: "
                f"build it with in_chans={c}"
            )
    if cfg.fixed_input_size and (h > cfg.input_size[1] or w > cfg.input_size[2]):
        raise ValueError(
            f"{name} reads images up to {cfg.input_size[1]}x{cfg.input_size[2]} pixels, got "
            f"{h}x{w}: resize the images (data.image_size) or pick a model for larger images"
        )
    if cfg.min_input_size is not None:
        _, min_h, min_w = cfg.min_input_size
        if h < min_h or w < min_w:
            raise ValueError(
                f"{name} needs inputs of at least {min_h}x{min_w} pixels, got {h}x{w}: "
                "resize the images (data.image_size) or pick a model for small images"
            )
