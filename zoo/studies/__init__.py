"""Studies: several training runs and their analysis from one config (``study.fn``).

``python train.py experiment=shortcut_landscape`` composes a training config with a ``study`` node;
``train_or_study`` runs the study's function instead of a single training run.
"""

from __future__ import annotations

from pathlib import Path

from hydra.utils import get_method
from omegaconf import DictConfig

from zoo.errors import UserError
from zoo.training.run import train
from zoo.training.rundir import record_command


def train_or_study(cfg: DictConfig) -> object:
    """``train.py``'s body: ``study.fn(cfg)`` when the config has a study, else ``train(cfg)``."""
    if not cfg.get("study"):
        return train(cfg)
    try:
        fn = get_method(cfg.study.fn)
    except Exception as err:
        raise UserError(f"study.fn={cfg.study.fn!r} cannot be imported ({err})") from None
    record_command(Path(cfg.output_dir), cfg)  # the study's folder; its runs have their own
    return fn(cfg)
