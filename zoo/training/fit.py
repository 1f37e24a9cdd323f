"""Fitting a LightningModule with the zoo's promises: checkpoints written atomically, a resume
checked against the model being trained, Ctrl-C stopping as SIGTERM does (checkpoint, then how to
resume), a full disk as a one-line error; then one test of the best checkpoint."""

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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException

from zoo.errors import RunInterrupted, UserError
from zoo.io import atomic_write_bytes
from zoo.training.callbacks import LastCheckpoint
from zoo.training.loggers import ResumableCSVLogger

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temp file and ``os.replace``: a run killed while
    saving keeps its previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
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


def resolve_resume(
    ckpt_path: str | None, ckpt_dir: Path, module: pl.LightningModule
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


# Builder options that change how a model computes, not what: a run that ran out of memory
# resumes with memory_efficient=true (recomputation in backward), and the other way round.
EXECUTION_OPTIONS = frozenset({"memory_efficient"})


def check_same_model(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """A resume must continue the same model: name the builder options that differ (options
    in ``EXECUTION_OPTIONS`` may change)."""
    if not saved:
        return
    if saved.get("model_name") != current.get("model_name"):
        raise UserError(
            f"{path} was trained as {saved.get('model_name')!r}, "
            f"not {current.get('model_name')!r}: resume with the same model=, or start a new "
            "run (another hydra.run.dir)"
        )
    a, b = dict(saved.get("model_kwargs") or {}), dict(current.get("model_kwargs") or {})
    differ = sorted(k for k in (set(a) | set(b)) - EXECUTION_OPTIONS if a.get(k) != b.get(k))
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


def fit(trainer: pl.Trainer, module: pl.LightningModule, dm, resume: str | None, out: Path) -> None:
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


def test_best(
    trainer: pl.Trainer,
    module: pl.LightningModule,
    dm,
    accelerator: str = "cpu",
    precision: str | int = "32",
    limit_test_batches: int | float | None = None,
) -> dict[str, float]:
    """Test the best-validation checkpoint once, on one device in the dtype the model was trained
    in (``precision``), on ``limit_test_batches`` batches."""
    best = trainer.checkpoint_callback.best_model_path or None
    eval_trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_test_batches=limit_test_batches,
    )
    with warnings.catch_warnings():  # the callbacks' state is not needed to test
        warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint")
        (metrics,) = eval_trainer.test(
            module, datamodule=dm, ckpt_path=best, verbose=False, weights_only=True
        )
    return metrics
