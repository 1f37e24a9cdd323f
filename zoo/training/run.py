"""``train(cfg)``: what ``train.py`` does, from a composed Hydra config to ``results.json``."""

from __future__ import annotations

import logging
import pickle
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from zoo.complexity import count_macs
from zoo.errors import UserError
from zoo.io import atomic_write_bytes, atomic_write_json
from zoo.registry import count_params
from zoo.training.callbacks import TestCurve
from zoo.training.module import ZooClassifier

log = logging.getLogger(__name__)

RESERVED_MODEL_KEYS = ("name", "pretrained", "in_chans", "num_classes")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temp file and ``os.replace``: a run killed while
    saving keeps its previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        import io

        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())


def cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 or AMX: without them bf16 matmuls are emulated (about 400x slower here)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() == "arm64"
    return "avx512_bf16" in flags or "amx_bf16" in flags


def model_kwargs_from_cfg(model_cfg: DictConfig, num_classes: int, in_chans: int) -> dict:
    kwargs = {
        k: v
        for k, v in OmegaConf.to_container(model_cfg, resolve=True).items()
        if k not in RESERVED_MODEL_KEYS
    }
    kwargs["num_classes"] = int(model_cfg.get("num_classes") or num_classes)
    kwargs["in_chans"] = int(model_cfg.get("in_chans") or in_chans)
    return kwargs


def build_datamodule(data_cfg: DictConfig, seed: int) -> pl.LightningDataModule:
    cfg = OmegaConf.to_container(data_cfg, resolve=True)
    cfg.setdefault("seed", seed)
    dm = instantiate(cfg)
    dm.setup("fit")
    return dm


def build_trainer(cfg: DictConfig, out: Path, callbacks: list) -> pl.Trainer:
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
    loggers = []
    for name in cfg.logger.get("loggers", ["csv"]):
        if name == "csv":
            loggers.append(CSVLogger(save_dir=str(out), name="", version=""))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(save_dir=str(out), name="tensorboard", version=""))
        else:
            raise UserError(f"unknown logger {name!r}; use csv and/or tensorboard")
    return pl.Trainer(
        default_root_dir=str(out),
        callbacks=callbacks,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
        **tcfg,
    )


def resolve_ckpt_path(ckpt_path: str | None, ckpt_dir: Path) -> str | None:
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "last":
        last = ckpt_dir / "last.ckpt"
        if not last.is_file():
            log.warning("ckpt_path=last but %s does not exist: starting from scratch", last)
            return None
        return str(last)
    if not Path(ckpt_path).is_file():
        raise UserError(f"ckpt_path={ckpt_path} does not exist (use ckpt_path=last to resume)")
    return ckpt_path


def train(cfg: DictConfig) -> float:
    """Fit, test the best checkpoint once, write results.json; return the optimised metric.

    A config with a ``study`` (e.g. ``experiment=shortcut_landscape``) runs ``study.fn(cfg)``
    instead, which trains several models through this function and analyses them.
    """
    if cfg.get("study"):
        from hydra.utils import get_method

        get_method(cfg.study.fn)(cfg)
        return float("nan")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ckpt_dir = out / "checkpoints"
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_num_threads(int(cfg.get("threads") or torch.get_num_threads()))

    dm = build_datamodule(cfg.data, cfg.seed)
    data_info = dm.describe()
    kwargs = model_kwargs_from_cfg(cfg.model, dm.num_classes, dm.in_chans)
    try:
        module = ZooClassifier(
            model_name=cfg.model.name,
            model_kwargs=kwargs,
            data=data_info,
            optim=OmegaConf.to_container(cfg.optim, resolve=True),
            scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
            label_smoothing=cfg.train.label_smoothing,
            channels_last=cfg.train.channels_last,
            compile=cfg.train.compile,
            fast=cfg.train.get("fast", False),
            adversarial=OmegaConf.to_container(cfg.train.adversarial, resolve=True)
            if cfg.train.get("adversarial")
            else None,
            pretrained=cfg.model.get("pretrained") or False,
            seed=cfg.seed,
        )
    except (ValueError, TypeError) as err:  # unknown model name or builder argument
        raise UserError(str(err)) from None

    checkpoint = ModelCheckpoint(
        dirpath=str(ckpt_dir),
        filename="best",
        monitor="val/acc1",
        mode="max",
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks: list = [checkpoint, TQDMProgressBar(refresh_rate=cfg.callbacks.progress_refresh)]
    test_curve = TestCurve(start) if cfg.callbacks.get("test_curve") else None
    if test_curve is not None:
        callbacks.append(test_curve)
    if cfg.callbacks.early_stopping.enabled:
        es = cfg.callbacks.early_stopping
        callbacks.append(EarlyStopping(monitor="val/acc1", mode="max", patience=es.patience))
    trainer = build_trainer(cfg, out, callbacks)
    atomic_write_bytes(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())

    fit_start = time.perf_counter()
    resume = resolve_ckpt_path(cfg.ckpt_path, ckpt_dir)
    try:  # weights_only: a checkpoint file can never run code
        trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"ckpt_path={resume} is not a zoo training checkpoint ({first})") from None
    wall = time.perf_counter() - fit_start
    best_val = checkpoint.best_model_score
    test_metrics: dict[str, float] = {}
    if cfg.test:
        best = checkpoint.best_model_path or None
        eval_trainer = pl.Trainer(
            accelerator=cfg.trainer.get("accelerator", "cpu"),
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        with warnings.catch_warnings():  # the callbacks' state is not needed to test
            warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint")
            (test_metrics,) = eval_trainer.test(
                module, datamodule=dm, ckpt_path=best, verbose=False, weights_only=True
            )
    if trainer.global_rank != 0:
        return float(best_val or 0.0)

    results = {
        "model": cfg.model.name,
        "dataset": data_info["name"],
        "model_kwargs": kwargs,
        "num_params": count_params(module.model),
        "macs": count_macs(module.model, (dm.in_chans, *dm.image_size)),
        "epochs": trainer.current_epoch,
        "global_steps": trainer.global_step,
        "wall_time_s": round(wall, 2),
        "best_val_acc1": float(best_val) if best_val is not None else None,
        "test_acc1": test_metrics.get("test/acc1"),
        "test_acc5": test_metrics.get("test/acc5"),
        "test_loss": test_metrics.get("test/loss"),
        "seed": cfg.seed,
        "threads": torch.get_num_threads(),
        "best_checkpoint": checkpoint.best_model_path,
        "data": data_info,
    }
    if test_curve is not None:
        results["test_curve"] = test_curve.curve
        results["time_to_acc1"] = {
            f"{t:g}": test_curve.time_to(t / 100) for t in cfg.callbacks.get("time_to", [])
        }
    atomic_write_json(out / "results.json", results)
    print_summary(results, out)
    metric = results.get(cfg.get("optimized_metric", "best_val_acc1"))
    return float(metric) if metric is not None else float("nan")


def print_summary(results: dict, out: Path) -> None:
    rows = [
        ("model", results["model"]),
        ("dataset", results["dataset"]),
        ("params", f"{results['num_params']:,}"),
        ("MACs / image", f"{results['macs'] / 1e6:.2f} M"),
        ("epochs", results["epochs"]),
        ("wall time", f"{results['wall_time_s']:.1f} s ({results['threads']} threads)"),
        ("best val top-1", _pct(results["best_val_acc1"])),
        ("test top-1", _pct(results["test_acc1"])),
        ("test top-5", _pct(results["test_acc5"])),
        ("test loss", f"{results['test_loss']:.4f}" if results["test_loss"] is not None else "–"),
        ("run dir", str(out)),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in rows) + "\n", flush=True)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"
