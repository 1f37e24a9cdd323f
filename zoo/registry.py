"""Model registry: ``@register_model`` builders, ``list_models``, ``create_model``, ``model_info``.

Every builder is a plain function with explicit keyword arguments (``num_classes``, ``in_chans`` and
the family's options). ``create_model`` checks the arguments against the builder's signature, so a
misspelt option fails at once with the list of accepted ones instead of deep inside ``__init__``.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = [
    "ModelEntry",
    "create_model",
    "get_model_entry",
    "is_model",
    "list_models",
    "model_info",
    "register_model",
]


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model name."""

    name: str
    builder: Callable[..., nn.Module]
    family: str
    paper: str
    input_size: tuple[int, int, int]
    num_classes: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted_kwargs(self) -> list[str]:
        params = inspect.signature(self.builder).parameters.values()
        return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


_REGISTRY: dict[str, ModelEntry] = {}
_NUM_PARAMS_CACHE: dict[str, int] = {}


def register_model(
    *,
    family: str,
    paper: str,
    input_size: tuple[int, int, int],
    num_classes: int,
    **extra: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under its function name.

    ``family`` groups models in tables (``"resnet"``, ``"cliquenet"``…), ``paper`` is the title with
    its arXiv id or venue, ``input_size`` and ``num_classes`` are the builder's defaults.
    Registering the same name twice is an error: it would silently shadow a model.
    """

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        sig = inspect.signature(builder)
        for required in ("num_classes", "in_chans"):
            if required not in sig.parameters:
                raise TypeError(f"builder {name}() must accept a {required!r} keyword argument")
        _REGISTRY[name] = ModelEntry(
            name=name,
            builder=builder,
            family=family,
            paper=paper,
            input_size=tuple(input_size),  # type: ignore[arg-type]
            num_classes=num_classes,
            extra=dict(extra),
        )
        return builder

    return decorator


def _ensure_models_imported() -> None:
    # Importing the package registers every family; done lazily to avoid import cycles.
    import zoo.models  # noqa: F401


def is_model(name: str) -> bool:
    _ensure_models_imported()
    return name in _REGISTRY


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; ``ValueError`` naming the closest names if unknown."""
    _ensure_models_imported()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"did you mean: {', '.join(close)}?" if close else "see zoo.list_models()"
        raise ValueError(f"unknown model {name!r}; {hint}") from None


def list_models(pattern: str = "*", *, pretrained: bool = False) -> list[str]:
    """Registered names matching the fnmatch ``pattern``, sorted.

    With ``pretrained=True`` only the models that have at least one pretrained tag are listed.
    """
    _ensure_models_imported()
    names = sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))
    if pretrained:
        from zoo.pretrained import list_tags

        names = [n for n in names if list_tags(n)]
    return names


def create_model(
    name: str,
    *,
    pretrained: bool | str = False,
    num_classes: int | None = None,
    in_chans: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    ``num_classes``/``in_chans`` default to the builder's own defaults. ``pretrained`` is
    ``False``, ``True`` (the model's default tag), a tag name, a local path or a URL; the weights
    are adapted to ``in_chans``/``num_classes`` when those differ from the checkpoint.
    """
    entry = get_model_entry(name)
    accepted = entry.accepted_kwargs
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"{name}() got unexpected argument(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted)}"
        )
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    if in_chans is not None:
        kwargs["in_chans"] = int(in_chans)
    model = entry.builder(**kwargs)
    if pretrained:
        from zoo.pretrained import load_pretrained

        load_pretrained(model, name, pretrained)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_info(name: str) -> dict[str, Any]:
    """Family, paper, default input size and classes, parameter count and pretrained tags."""
    entry = get_model_entry(name)
    if name not in _NUM_PARAMS_CACHE:
        with _meta_device():
            _NUM_PARAMS_CACHE[name] = count_params(entry.builder())
    from zoo.pretrained import list_tags

    return {
        "name": name,
        "family": entry.family,
        "paper": entry.paper,
        "input_size": entry.input_size,
        "num_classes": entry.num_classes,
        "num_params": _NUM_PARAMS_CACHE[name],
        "pretrained": list_tags(name),
        **entry.extra,
    }


def _meta_device():
    """Build on the meta device: counting VGG-19's 144M parameters needs no real memory."""
    import torch

    return torch.device("meta")
