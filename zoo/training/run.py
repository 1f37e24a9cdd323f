"""``train(cfg)``: what ``train.py`` does, from a composed Hydra config to ``results.json``."""

from __future__ import annotations

import errno
import io
import logging
import pickle
import platform
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from zoo.complexity import count_macs
from zoo.errors import UserError
from zoo.io import atomic_write_bytes, atomic_write_json
from zoo.registry import check_input_size, count_params
from zoo.runtime import configure_allocator, set_threads
from zoo.training.callbacks import TestCurve
from zoo.training.config_checks import check_train_config
from zoo.training.console import quiet_third_party
from zoo.training.debug import set_dropout
from zoo.training.instantiate import build, build_all
from zoo.training.loggers import ResumableCSVLogger
from zoo.training.module import ZooClassifier
from zoo.training.recalibrate import RecalibrateBatchNorm
from zoo.training.rundir import check_run_dir, run_lock

log = logging.getLogger(__name__)

RESERVED_MODEL_KEYS = ("name", "pretrained", "in_chans", "num_classes")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temp file and ``os.replace``: a run killed while
    saving keeps its previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())


def train(cfg: DictConfig) -> float:
    """Fit, test the best checkpoint once, write results.json; return the optimised metric."""
    check_train_config(cfg)
    quiet_third_party()
    out = Path(cfg.output_dir)
    lead = rank_zero_only.rank == 0  # DDP: the other processes share rank 0's folder
    with run_lock(out) if lead else nullcontext():
        if lead:
            check_run_dir(out, resume=cfg.ckpt_path == "last", overwrite=cfg.overwrite)
        configure_allocator(cfg.allocator)
        set_threads(cfg.threads)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        dm = build_datamodule(cfg.data, cfg.seed)
        module = build_module(cfg, dm)
        resume, resume_step = resolve_resume(cfg.ckpt_path, out / "checkpoints", module)
        trainer = build_trainer(cfg)
        if resume_step is not None and cfg.ckpt_path == "last":
            keep_history_until(trainer, resume_step)
        if lead:
            atomic_write_bytes(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())
        fit(trainer, module, dm, resume, out)
        clock = module.clock.state_dict()  # before testing, which reloads the best checkpoint
        test_metrics = test_best(cfg, trainer, module, dm) if cfg.test else {}
        if not lead:
            return float(trainer.checkpoint_callback.best_model_score or 0.0)
        results = collect_results(cfg, trainer, module, dm, clock, test_metrics)
        atomic_write_json(out / "results.json", results)
    print_summary(results, out)
    metric = results.get(cfg.get("optimized_metric", "best_val_acc1"))
    return float(metric) if metric is not None else float("nan")


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


def build_module(cfg: DictConfig, dm: pl.LightningDataModule) -> pl.LightningModule:
    if cfg.get("lightning_module"):  # a module of its own (e.g. zoo.flows) instead of a classifier
        return build(
            cfg.lightning_module,
            "lightning_module",
            data=dm.describe(),
            optim=OmegaConf.to_container(cfg.optim, resolve=True),
            scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
            seed=cfg.seed,
            budget_s=cfg.train.get("budget_s"),
            _recursive_=False,  # optim/scheduler are specs the module builds, plain dicts
            _convert_="all",
        )
    kwargs = model_kwargs_from_cfg(cfg.model, dm.num_classes, dm.in_chans)
    kwargs = set_dropout(cfg.model.name, kwargs, cfg.train.get("dropout"))
    adversarial = cfg.train.get("adversarial")
    distill = cfg.train.get("distill")
    try:
        check_input_size(cfg.model.name, (dm.in_chans, *dm.image_size))
        return ZooClassifier(
            model_name=cfg.model.name,
            model_kwargs=kwargs,
            data=dm.describe(),
            optim=OmegaConf.to_container(cfg.optim, resolve=True),
            scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
            label_smoothing=cfg.train.label_smoothing,
            channels_last=cfg.train.channels_last,
            compile=cfg.train.compile,
            fast=cfg.train.get("fast", False),
            adversarial=OmegaConf.to_container(adversarial, resolve=True) if adversarial else None,
            pretrained=cfg.model.get("pretrained") or False,
            seed=cfg.seed,
            budget_s=cfg.train.get("budget_s"),
            distill=OmegaConf.to_container(distill, resolve=True) if distill else None,
        )
    except (ValueError, TypeError) as err:  # unknown model name or builder argument
        raise UserError(str(err)) from None


def cpu_has_fast_bf16() -> bool:
    """AVX512-BF16 or AMX: without them bf16 matmuls are emulated (about 400x slower here)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() == "arm64"
    return "avx512_bf16" in flags or "amx_bf16" in flags


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
    return pl.Trainer(
        default_root_dir=str(cfg.output_dir),
        callbacks=build_all(cfg.callbacks, "callbacks"),
        logger=build_all(cfg.logger, "logger"),
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
        **tcfg,
    )


def resolve_resume(
    ckpt_path: str | None, ckpt_dir: Path, module: ZooClassifier
) -> tuple[str | None, int | None]:
    """The checkpoint to resume from, checked against the model being trained, and its step."""
    if ckpt_path in (None, "", "null"):
        return None, None
    path = ckpt_dir / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if ckpt_path == "last" and not path.is_file():
        log.warning("ckpt_path=last but %s does not exist: starting from scratch", path)
        return None, None
    if not path.is_file():
        raise UserError(f"ckpt_path={ckpt_path} does not exist (use ckpt_path=last to resume)")
    checkpoint = read_training_checkpoint(path)
    check_same_model(checkpoint.get("hyper_parameters", {}), module.hparams, path)
    return str(path), int(checkpoint.get("global_step", 0))


def keep_history_until(trainer: pl.Trainer, step: int) -> None:
    """Drop the metrics.csv rows logged after the resumed checkpoint: the run logs them again."""
    for logger in trainer.loggers:
        if isinstance(logger, ResumableCSVLogger):
            logger.truncate_from_step(step)


def read_training_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint read without running code; a one-line error for anything else."""
    if path.stat().st_size == 0:
        raise UserError(f"ckpt_path={path} is empty: not a training checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:  # weights_only refused an object: code or a foreign class
        raise UserError(
            f"ckpt_path={path} is not a zoo training checkpoint (it holds objects other than "
            "tensors and plain values); give a .ckpt written by train.py"
        ) from None
    except Exception:  # zip/EOF errors of a foreign or truncated file
        raise UserError(
            f"ckpt_path={path} is not a zoo training checkpoint (truncated, or not written by "
            "torch.save); give a .ckpt written by train.py"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"ckpt_path={path} is not a zoo training checkpoint (no state_dict)")
    return checkpoint


def check_same_model(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """A resume must continue the same model: name the builder options that differ."""
    if not saved:
        return
    if saved.get("model_name") != current.get("model_name"):
        raise UserError(
            f"{path} was trained as {saved.get('model_name')!r}, "
            f"not {current.get('model_name')!r}: resume with the same model=, or start a new "
            "run (another hydra.run.dir)"
        )
    a, b = dict(saved.get("model_kwargs") or {}), dict(current.get("model_kwargs") or {})
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if differ:
        shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in differ)
        raise UserError(
            f"{path} has other model options ({shown}): resume with the checkpoint's options, "
            "or start a new run"
        )


def fit(trainer: pl.Trainer, module: ZooClassifier, dm, resume: str | None, out: Path) -> None:
    try:  # weights_only: a checkpoint file can never run code
        trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise UserError(
            f"the disk is full ({err.filename or out}); the last good checkpoint is kept: free "
            "space, then resume with ckpt_path=last"
        ) from None


def test_best(cfg: DictConfig, trainer: pl.Trainer, module: ZooClassifier, dm) -> dict[str, float]:
    """Test the best-validation checkpoint once (on ``trainer.limit_test_batches`` batches)."""
    best = trainer.checkpoint_callback.best_model_path or None
    eval_trainer = pl.Trainer(
        accelerator=cfg.trainer.get("accelerator", "cpu"),
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_test_batches=cfg.trainer.get("limit_test_batches"),
    )
    with warnings.catch_warnings():  # the callbacks' state is not needed to test
        warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint")
        (metrics,) = eval_trainer.test(
            module, datamodule=dm, ckpt_path=best, verbose=False, weights_only=True
        )
    return metrics


def collect_results(
    cfg, trainer, module, dm, clock: dict[str, Any], test_metrics: dict[str, float]
) -> dict[str, Any]:
    best_val = trainer.checkpoint_callback.best_model_score
    data_info = dm.describe()
    classifier = isinstance(module, ZooClassifier)
    if classifier:
        metrics = {
            "best_val_acc1": float(best_val) if best_val is not None else None,
            "test_acc1": test_metrics.get("test/acc1"),
            "test_acc5": test_metrics.get("test/acc5"),
            "test_loss": test_metrics.get("test/loss"),
        }
    else:  # a lightning_module of its own (e.g. zoo.flows) reports its own metrics
        monitor = trainer.checkpoint_callback.monitor.replace("/", "_")
        metrics = {f"best_{monitor}": float(best_val) if best_val is not None else None}
        metrics.update(module.results(test_metrics))
    results: dict[str, Any] = {
        "model": module.hparams.model_name,
        "dataset": data_info["name"],
        "model_kwargs": module.hparams.model_kwargs,
        "num_params": count_params(module.model),
        "macs": count_macs(module.model, (dm.in_chans, *dm.image_size)) if classifier else None,
        "epochs": trainer.current_epoch,
        "global_steps": trainer.global_step,
        "wall_time_s": round(clock["elapsed_s"], 2),
        "images_seen": clock["images"],
        "budget_s": clock["budget_s"],
        **metrics,
        "seed": cfg.seed,
        "threads": torch.get_num_threads(),
        "best_checkpoint": trainer.checkpoint_callback.best_model_path,
        "data": data_info,
    }
    for callback in trainer.callbacks:  # what the reporting callbacks measured
        if isinstance(callback, (TestCurve, RecalibrateBatchNorm)):
            results.update(callback.results())
    return results


def print_summary(results: dict, out: Path) -> None:
    budget = f", budget {results['budget_s']:g} s" if results.get("budget_s") else ""
    rows = [
        ("model", results["model"]),
        ("dataset", results["dataset"]),
        ("params", f"{results['num_params']:,}"),
        ("MACs / image", f"{results['macs'] / 1e6:.2f} M" if results["macs"] else "–"),
        ("epochs", f"{results['epochs']} ({results['images_seen']:,} images)"),
        ("wall time", f"{results['wall_time_s']:.1f} s ({results['threads']} threads{budget})"),
    ]
    if "test_acc1" in results:
        rows += [
            ("best val top-1", _pct(results["best_val_acc1"])),
            ("test top-1", _pct(results["test_acc1"])),
            ("test top-5", _pct(results["test_acc5"])),
            ("test loss", _num(results["test_loss"])),
        ]
    else:  # a lightning_module of its own: its best-validation and test numbers
        rows += [
            (k, _num(v))
            for k, v in results.items()
            if k.startswith(("best_val", "test_")) and (v is None or isinstance(v, (int, float)))
        ]
    rows.append(("run dir", str(out)))
    width = max(len(k) for k, _ in rows)
    print("\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in rows) + "\n", flush=True)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
