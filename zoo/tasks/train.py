"""``python train.py``: from a composed training config to a fitted, tested run and its
``results.json`` (the steps of lightning-hydra-template's ``src/train.py``)."""

from __future__ import annotations

import logging
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from zoo.errors import UserError
from zoo.io import atomic_write_json, atomic_write_text
from zoo.tasks.common import build_datamodule, command_line, experiment_name, record_command
from zoo.tasks.config_checks import check_train_config
from zoo.training.console import quiet_third_party
from zoo.training.fit import (
    AtomicCheckpointIO,
    cpu_has_fast_bf16,
    fit,
    keep_history_until,
    resolve_resume,
    test_best,
)
from zoo.training.instantiate import build, build_all
from zoo.training.module import optimizer_factory
from zoo.training.results import collect_results, optimized_metric, print_summary
from zoo.training.rundir import check_run_dir, replacing, run_lock, writable
from zoo.training.runtime import configure_allocator, set_threads

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float:
    """Fit, test the best checkpoint once, write results.json; return the optimised metric.

    Everything is checked (config, run folder, data, model, checkpoint to resume, trainer) before
    the run writes into its folder; with ``overwrite=true`` the old run is replaced only once the
    new one has started (:func:`zoo.training.rundir.replacing`).
    """
    check_train_config(cfg)
    quiet_third_party()
    out = Path(cfg.output_dir)
    lead = rank_zero_only.rank == 0  # DDP: the other processes share rank 0's folder
    with run_lock(out) if lead else nullcontext():
        replace = lead and check_run_dir(
            out, resume=cfg.ckpt_path == "last", overwrite=cfg.overwrite
        )
        configure_allocator(cfg.allocator)
        set_threads(cfg.threads)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        dm = build_datamodule(cfg.data, "fit", seed=cfg.seed)
        module = build_module(cfg, dm)
        module.clock.command = command_line("train.py")  # kept in results.json's "pieces"
        resume, resume_step = resolve_resume(cfg.ckpt_path, out / "checkpoints", module)
        trainer = build_trainer(cfg)
        with writable(out), replacing(out, replace):
            if resume_step is not None and cfg.ckpt_path == "last":
                keep_history_until(trainer, resume_step)
            if lead:
                atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
                record_command(out, cfg)
            fit(trainer, module, dm, resume, out)
            clock = module.clock.state_dict()  # before testing, which reloads the best checkpoint
            test_metrics = (
                test_best(
                    trainer,
                    module,
                    dm,
                    accelerator=cfg.trainer.get("accelerator", "cpu"),
                    precision=cfg.trainer.get("precision", "32"),  # the dtype trained in
                    limit_test_batches=cfg.trainer.get("limit_test_batches"),
                )
                if cfg.test
                else {}
            )
            if not lead:
                return float(trainer.checkpoint_callback.best_model_score or 0.0)
            results = collect_results(
                trainer, module, dm.describe(), clock, test_metrics, cfg.seed, experiment_name()
            )
            atomic_write_json(out / "results.json", results)
    print_summary(results, out)
    return optimized_metric(results, cfg.get("optimized_metric", "best_val_acc1"), out)


def build_module(cfg: DictConfig, dm: pl.LightningDataModule) -> pl.LightningModule:
    """The LightningModule of ``cfg.lightning_module`` (conf/lightning_module/: the classifier of
    ``model=NAME``, or a module of its own such as zoo.flows'), for the data of ``dm``, with the
    optimizer and schedule of ``cfg.optim`` and ``cfg.scheduler``."""
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True)
    # Built once now, so that a wrong key (+optim.x=1) fails before any work instead of when
    # training starts.
    optimizer_factory(optim)
    build(scheduler, "scheduler")
    return build(
        cfg.lightning_module,
        "lightning_module",
        data=dm.describe(),
        optim=optim,
        scheduler=scheduler,
        seed=cfg.seed,
        budget_s=cfg.train.get("budget_s"),
        _recursive_=False,  # the model config and optim/scheduler are specs: plain dicts
        _convert_="all",
    )


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    """The Lightning trainer of ``cfg.trainer`` with the callbacks and loggers of the config."""
    tcfg: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)
    precision = str(tcfg.get("precision", "32"))
    accelerator = tcfg.get("accelerator", "cpu")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and "bf16" in precision and not cpu_has_fast_bf16():
        warnings.warn(
            f"precision={precision} on a CPU without AVX512-BF16/AMX: bf16 matmuls are emulated "
            "(measured ~400x slower than fp32 here); use trainer.precision=32",
            stacklevel=1,
        )
    if cfg.train.get("budget_s"):
        tcfg["max_epochs"] = -1  # the time budget ends training (TrainingClock)
    callbacks = build_all(cfg.callbacks, "callbacks")
    loggers = build_all(cfg.logger, "logger")
    try:
        return pl.Trainer(
            default_root_dir=str(cfg.output_dir),
            callbacks=callbacks,
            logger=loggers,
            plugins=[AtomicCheckpointIO()],
            enable_model_summary=False,
            **tcfg,
        )
    except (MisconfigurationException, ValueError, TypeError) as err:  # Lightning's own checks
        raise UserError(f"trainer: {str(err).strip().splitlines()[0]}") from None
