"""Write ``conf/model/<name>.yaml`` for every registered model and the family shortcuts.

``python -m zoo.tools.gen_model_configs`` — run it after registering a model (a test fails when a
registered model has no config). Each file lists the builder's options with their defaults, so
``model.shortcut=A`` works and a misspelt ``model.shortcutt=A`` fails with a one-line error.
``in_chans`` and ``num_classes`` are null: the trainer takes them from the data.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from zoo.models.registry import get_model_entry
from zoo.weights.factory import list_models

CONF_MODEL = Path(__file__).resolve().parents[2] / "conf" / "model"

# model=<family> trains a model that fits 28–32 px data out of the box. A shortcut named like an
# ImageNet model (alexnet, googlenet) wins: use model=alexnet model.name=alexnet for the big one.
FAMILY_SHORTCUTS = {
    "lenet5": "lenet5",
    "alexnet": "alexnet_cifar",
    "vgg": "vgg11_bn_cifar",
    "googlenet": "googlenet_cifar",
    "resnet": "resnet20",
    "resnet_noshort": "resnet20_noshort",
    "densenet": "densenet_bc100_k12",
    "cliquenet": "cliquenet_k36_t12_ac",
    "odenet": "odenet_mnist",
}


def _yaml_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return (
            f'"{value}"'
            if value in {"none", "null", "true", "false", ""} or ":" in value
            else value
        )
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return repr(value)


def render(config_name: str, model_name: str) -> str:
    entry = get_model_entry(model_name)
    lines = [
        f"# {entry.builder.__doc__.strip().splitlines()[0]}"
        if entry.builder.__doc__
        else f"# {model_name}"
    ]
    if config_name != model_name:
        lines.append(f"# Family shortcut: model={config_name} trains {model_name}.")
    lines += [f"name: {model_name}", "pretrained: false", "in_chans: null", "num_classes: null"]
    for p in inspect.signature(entry.builder).parameters.values():
        if p.name in ("num_classes", "in_chans"):
            continue
        lines.append(f"{p.name}: {_yaml_value(p.default)}")
    return "\n".join(lines) + "\n"


def expected_configs() -> dict[str, str]:
    configs = {name: render(name, name) for name in list_models()}
    for shortcut, target in FAMILY_SHORTCUTS.items():
        if target in configs:
            configs[shortcut] = render(shortcut, target)
    return configs


def main() -> None:
    CONF_MODEL.mkdir(parents=True, exist_ok=True)
    for name, text in expected_configs().items():
        (CONF_MODEL / f"{name}.yaml").write_text(text)
    print(f"wrote {len(expected_configs())} configs to {CONF_MODEL}")


if __name__ == "__main__":
    main()
