"""Objects from config nodes with a ``_target_``: callbacks, loggers, optimizers, schedules.

As in lightning-hydra-template (``src/utils/instantiators.py``): every entry of ``cfg.callbacks``
and ``cfg.logger`` that has a ``_target_`` is instantiated in order; an entry with ``enabled:
false`` is left out; plain values (switches such as ``callbacks.test_curve``) are only read by
interpolation. A target that cannot be imported or built is a one-line UserError naming the config
key.
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from zoo.errors import UserError

UNEXPECTED_ARGUMENT = re.compile(r"unexpected keyword argument '([^']+)'")


def _error(key: str, target: Any, cause: BaseException) -> UserError:
    """One line for a target that cannot be built; an argument it does not take is named as the
    config key it came from (``+data.nonsense=1``: ``data.nonsense``)."""
    text = str(cause).strip()
    unexpected = UNEXPECTED_ARGUMENT.search(text)
    if isinstance(cause, TypeError) and unexpected:
        return UserError(
            f"unknown config key '{key}.{unexpected.group(1)}': {target} has no such argument"
        )
    first = text.splitlines()[0] if text else type(cause).__name__
    return UserError(f"{key}: cannot build {target!r} ({first})")


def check_partial_arguments(factory: Any, key: str, target: Any) -> None:
    """A ``_partial_`` target is only called later (an optimizer, with the parameters): check now
    that it takes the configured arguments."""
    if not isinstance(factory, functools.partial):
        return
    try:
        signature = inspect.signature(factory.func)
    except (TypeError, ValueError):  # builtins without a signature
        return
    try:
        signature.bind_partial(*factory.args, **factory.keywords)
    except TypeError as err:
        name = next((k for k in factory.keywords if k not in signature.parameters), None)
        has_kwargs = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        if name is not None and not has_kwargs:
            raise _error(key, target, TypeError(f"unexpected keyword argument '{name}'")) from None
        raise _error(key, target, err) from None


def build(node: DictConfig | dict, key: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)`` with a one-line error naming ``key``."""
    target = node.get("_target_")
    try:
        built = instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):  # the target's own one-line message
            raise err.__cause__ from None
        raise _error(key, target, err.__cause__ or err) from None
    except (TypeError, ValueError) as err:
        raise _error(key, target, err) from None
    check_partial_arguments(built, key, target)
    return built


def build_all(group: DictConfig | None, group_name: str) -> list[Any]:
    """Every enabled ``_target_`` entry of a config group, in order."""
    objects = []
    for key, node in (group or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        spec = OmegaConf.to_container(node, resolve=True)
        if not spec.pop("enabled", True):
            continue
        objects.append(build(spec, f"{group_name}.{key}"))
    return objects
