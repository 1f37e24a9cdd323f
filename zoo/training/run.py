"""``train(cfg)``: what ``train.py`` does, from a composed Hydra config to ``results.json``."""

from __future__ import annotations

import errno
import io
import logging
import pickle
import platform
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException

from zoo.complexity import count_macs
from zoo.errors import RunInterrupted, UserError
from zoo.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from zoo.registry import check_builder_value, check_input_size, count_params
from zoo.runtime import configure_allocator, set_threads
from zoo.training.callbacks import LastCheckpoint, TestCurve
from zoo.training.config_checks import check_train_config
from zoo.training.console import quiet_third_party
from zoo.training.debug import set_dropout
from zoo.training.instantiate import build, build_all
from zoo.training.loggers import ResumableCSVLogger
from zoo.training.module import ZooClassifier, optimizer_factory
from zoo.training.recalibrate import RecalibrateBatchNorm
from zoo.training.rundir import check_run_dir, record_command, replacing, run_lock, writable

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
        dm = build_datamodule(cfg.data, cfg.seed)
        module = build_module(cfg, dm)
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
            test_metrics = test_best(cfg, trainer, module, dm) if cfg.test else {}
            if not lead:
                return float(trainer.checkpoint_callback.best_model_score or 0.0)
            results = collect_results(cfg, trainer, module, dm, clock, test_metrics)
            atomic_write_json(out / "results.json", results)
    print_summary(results, out)
    return optimized_metric(results, cfg.get("optimized_metric", "best_val_acc1"), out)


def optimized_metric(results: dict[str, Any], name: str, out: Path) -> float:
    """The number a sweeper compares runs by (NaN when the run did not measure it); a name that is
    not a result is a UserError rather than a NaN that would quietly lose every comparison."""
    if name not in results:
        numbers = [k for k, v in results.items() if isinstance(v, (int, float, type(None)))]
        raise UserError(
            f"optimized_metric={name} is not a result of this run (its results.json in {out} is "
            f"complete); use one of: {', '.join(numbers)}"
        )
    metric = results[name]
    return float(metric) if isinstance(metric, (int, float)) else float("nan")


def model_kwargs_from_cfg(model_cfg: DictConfig, num_classes: int, in_chans: int) -> dict:
    """The builder arguments of ``model_cfg``; ``num_classes``/``in_chans`` follow the data and,
    when given, are checked as ``create_model`` checks them and against the data."""
    kwargs = {
        k: v
        for k, v in OmegaConf.to_container(model_cfg, resolve=True).items()
        if k not in RESERVED_MODEL_KEYS
    }
    data_values = {"num_classes": (num_classes, "classes"), "in_chans": (in_chans, "channels")}
    for key, (data_value, what) in data_values.items():
        value = model_cfg.get(key)
        if value is None:
            kwargs[key] = data_value
            continue
        try:
            kwargs[key] = check_builder_value(f"model.{key}", key, value, minimum=1)
        except ValueError as err:
            raise UserError(f"{err}; leave it unset to follow the data") from None
        if kwargs[key] != data_value:
            raise UserError(
                f"model.{key}={value} but the data has {data_value} {what}: leave model.{key} "
                "unset (null) to follow the data"
            )
    return kwargs


def build_datamodule(data_cfg: DictConfig, seed: int) -> pl.LightningDataModule:
    cfg = OmegaConf.to_container(data_cfg, resolve=True)
    cfg.setdefault("seed", seed)
    dm = build(cfg, "data")
    dm.setup("fit")
    return dm


def check_optimizer(cfg: DictConfig) -> None:
    """Build the optimizer factory and the schedule once, so that a wrong key (``+optim.x=1``)
    fails before any work instead of when training starts."""
    optimizer_factory(OmegaConf.to_container(cfg.optim, resolve=True))
    build(OmegaConf.to_container(cfg.scheduler, resolve=True), "scheduler")


def build_module(cfg: DictConfig, dm: pl.LightningDataModule) -> pl.LightningModule:
    check_optimizer(cfg)
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
            tta=cfg.train.get("tta"),
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
    if path.is_dir():
        raise UserError(
            f"ckpt_path={ckpt_path} is a folder: give a checkpoint file such as "
            f"{path / 'checkpoints' / 'last.ckpt'}, or ckpt_path=last to resume this run"
        )
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


@contextmanager
def ctrl_c_stops_like_sigterm() -> Iterator[list[int]]:
    """The first Ctrl-C (SIGINT) during ``fit`` stops the run as SIGTERM does, through Lightning's
    SIGTERM handler (checkpoint, then a message); a second one interrupts at once. Yields the
    signals received."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_sigint(signum: int, frame) -> None:
        sigterm_handler = signal.getsignal(signal.SIGTERM)
        if received or not callable(sigterm_handler):
            raise KeyboardInterrupt
        received.append(signum)
        sigterm_handler(signal.SIGTERM, frame)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)


def fit(trainer: pl.Trainer, module: ZooClassifier, dm, resume: str | None, out: Path) -> None:
    try:  # weights_only: a checkpoint file can never run code
        with ctrl_c_stops_like_sigterm() as received:
            trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)
    except SIGTERMException:  # Lightning stops after the batch a SIGTERM arrived in
        signum = received[0] if received else signal.SIGTERM
        raise RunInterrupted(interrupted_message(trainer, signum), signum) from None
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise UserError(
            f"the disk is full ({err.filename or out}); the last good checkpoint is kept: free "
            "space, then resume with ckpt_path=last"
        ) from None


def interrupted_message(trainer: pl.Trainer, signum: int) -> str:
    """Where a stopped run ended, what it saved and how to resume it."""
    name = signal.Signals(signum).name
    last = next((c for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
    where = f"stopped by {name} at epoch {trainer.current_epoch}, step {trainer.global_step}"
    if last is not None and last.saved_at is not None:
        epoch, step = last.saved_at
        kept = f"{last.path} holds epoch {epoch}, step {step}"
    elif last is not None and last.path.is_file():
        kept = f"{last.path} from before is kept"
    else:
        return f"{where}; no checkpoint had been written yet: run the command again"
    return f"{where}; {kept}: resume with the same command and ckpt_path=last"


def test_best(cfg: DictConfig, trainer: pl.Trainer, module: ZooClassifier, dm) -> dict[str, float]:
    """Test the best-validation checkpoint once (on ``trainer.limit_test_batches`` batches)."""
    best = trainer.checkpoint_callback.best_model_path or None
    eval_trainer = pl.Trainer(
        accelerator=cfg.trainer.get("accelerator", "cpu"),
        devices=1,
        precision=cfg.trainer.get("precision", "32"),  # the dtype the model was trained in
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
