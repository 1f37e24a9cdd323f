"""Objects from config nodes with a ``_target_``: callbacks, loggers, optimizers, schedules.

As in lightning-hydra-template (``src/utils/instantiators.py``): every entry of ``cfg.callbacks``
and ``cfg.logger`` that has a ``_target_`` is instantiated in order; an entry with ``enabled:
false`` is left out; plain values (switches such as ``callbacks.test_curve``) are only read by
interpolation. A target that cannot be imported or built is a one-line UserError naming the config
key.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from zoo.errors import UserError


def build(node: DictConfig | dict, key: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)`` with a one-line error naming ``key``."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise UserError(f"{key}: cannot build {node.get('_target_')!r} ({first})") from None
    except (TypeError, ValueError) as err:
        raise UserError(f"{key}: {err}") from None


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
