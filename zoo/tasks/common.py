"""What several tasks read from a config: the data module of ``data=...``, the checkpoint of
``ckpt_path=...`` with the data to analyse it on, and Hydra's record of the command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn

from zoo.data import InMemoryDataModule
from zoo.errors import UserError
from zoo.io import atomic_write_text
from zoo.training.instantiate import build
from zoo.weights.checkpoint import model_from_checkpoint


def build_datamodule(
    data_cfg: DictConfig, stage: str = "fit", seed: int | None = None
) -> InMemoryDataModule:
    """The data module of ``data_cfg`` set up for ``stage``; ``seed`` (a training run's) is the
    data's seed unless the config gives one."""
    spec = OmegaConf.to_container(data_cfg, resolve=True)
    if seed is not None:
        spec.setdefault("seed", seed)
    dm = build(spec, "data")
    dm.setup(stage)
    return dm


def load_checkpoint_and_data(
    cfg: DictConfig, task: str, stage: str = "test"
) -> tuple[nn.Module, dict[str, Any], InMemoryDataModule]:
    """The model of ``cfg.ckpt_path`` and ``cfg.data`` set up for ``stage``, normalised with the
    statistics stored with the checkpoint (those of its training split), not recomputed. Shared
    by every task that analyses one checkpoint.

    Returns ``(model, info, datamodule)``; the model is in eval mode on the CPU.
    """
    if not cfg.ckpt_path:
        raise UserError(f"task={task} needs ckpt_path=PATH (a .ckpt or an exported .safetensors)")
    model, info = model_from_checkpoint(cfg.ckpt_path)
    dm = build_datamodule(cfg.data, stage)
    if info.get("data", {}).get("mean"):
        dm.mean = torch.tensor(info["data"]["mean"])
        dm.std = torch.tensor(info["data"]["std"])
    num_classes = model.num_classes
    if dm.num_classes != num_classes:
        raise UserError(
            f"{info['model']} predicts {num_classes} classes but data={dm.name} has "
            f"{dm.num_classes}"
        )
    in_chans = info["model_kwargs"].get("in_chans", info.get("data", {}).get("in_chans"))
    if in_chans is not None and dm.in_chans != int(in_chans):
        raise UserError(
            f"{cfg.ckpt_path} ({info['model']}) takes {in_chans}-channel images but "
            f"data={dm.name} has {dm.in_chans} channels; evaluate it on data with {in_chans} "
            "channels (the data it was trained on)"
        )
    return model, info, dm


def experiment_name() -> str | None:
    """The ``experiment=...`` a Hydra job composed (the recipe a run followed), None outside one."""
    if not HydraConfig.initialized():
        return None
    return OmegaConf.select(HydraConfig.instance().cfg, "hydra.runtime.choices.experiment")


def command_line(script: str) -> str:
    """The command of the running Hydra job, ``python SCRIPT`` and its overrides (Hydra's own
    ones, such as ``hydra.run.dir``, included); "" outside a Hydra job."""
    if not HydraConfig.initialized():
        return ""
    overrides = HydraConfig.instance().cfg.hydra.overrides
    given = [o for o in overrides.hydra if not o.startswith("hydra.mode=")] + list(overrides.task)
    return " ".join(["python", script, *given])


def record_command(out: Path, cfg: DictConfig, *, replace: bool = True) -> None:
    """Hydra's record of the command in ``out/.hydra`` (config.yaml, hydra.yaml, overrides.yaml).

    The configs set ``hydra.output_subdir: null`` so that Hydra does not write it before the
    command's checks; the zoo writes it here once they passed, for the Hydra job whose run folder
    ``out`` is (nothing outside a Hydra job). ``replace=False`` keeps a record already there.
    """
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.instance().cfg
    job_dir = OmegaConf.select(hydra_cfg, "hydra.runtime.output_dir", default=None)
    if job_dir is None or Path(job_dir).resolve() != out.resolve():
        return
    record = out / ".hydra"
    if record.exists() and not replace:
        return
    files = {
        "config.yaml": OmegaConf.to_yaml(cfg),
        "hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
        "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task),
    }
    for name, text in files.items():
        atomic_write_text(record / name, text)
