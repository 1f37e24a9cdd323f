"""Shared test helpers: config composition, in-process and CLI training runs, data availability."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from omegaconf import DictConfig

from zoo.paths import CONF_DIR, ROOT

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
HAS_FMNIST = (FMNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()

needs_fmnist = pytest.mark.skipif(
    not HAS_FMNIST,
    reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist (see `make data`)",
)

# A tiny synthetic data set: a training run of a few steps in well under a second.
SYNTHETIC_TINY = [
    "data=synthetic",
    "data.num_samples=96",
    "data.num_test=32",
    "data.val_size=32",
    "data.batch_size=16",
    "threads=2",
]

# LeNet-5 on 448 synthetic 28x28 grey images: 12 steps of 32 per epoch, one thread.
LENET_448 = [
    "model=lenet5",
    "data=synthetic",
    "data.num_samples=448",
    "data.val_size=64",
    "data.num_test=64",
    "data.image_size=28",
    "data.in_chans=1",
    "data.batch_size=32",
    "threads=1",
]


def compose(
    overrides: list[str], config_name: str = "train", return_hydra_config: bool = False
) -> DictConfig:
    """The config ``train.py``/``evaluate.py`` would run with these overrides."""
    with hydra.initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra.compose(config_name, overrides, return_hydra_config=return_hydra_config)


def run_train(out: Path, overrides: list[str]) -> dict:
    """Train in this process into ``out``; the run's results.json."""
    from zoo.tasks import train

    train.run(compose([f"output_dir={out}", *overrides]))
    return json.loads((out / "results.json").read_text())


def cli(
    script: str, args: list[str], env_extra: dict | None = None, prefix: list[str] | None = None
) -> subprocess.Popen:
    """Start ``train.py``/``evaluate.py`` in a subprocess (one thread, text pipes), after the
    command ``prefix`` (e.g. ``setpriv ... --``) when given."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen(
        [*(prefix or []), sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_line_error(proc: subprocess.Popen, timeout: float = 180) -> str:
    """Wait for a CLI that must fail on user input: exit 2 and one line on stderr, returned."""
    _, err = proc.communicate(timeout=timeout)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert proc.returncode == 2, err[-2000:]
    assert "Traceback" not in err and len(lines) == 1, err[-2000:]
    return lines[0]


class SimulatedCrash(RuntimeError):
    """Raised by :class:`CrashAtStep`: stands for a killed process in in-process tests."""


def crash_at_step(step: int):
    """A callback (``+callbacks.crash._target_=helpers.crash_at_step``) that fails at ``step``."""
    import pytorch_lightning as pl

    class CrashAtStep(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
            if trainer.global_step == step:
                raise SimulatedCrash(f"simulated crash at step {step}")

    return CrashAtStep()


class StepRecorder:
    """A callback that runs the training clock on simulated time, ``step_s`` per training step,
    and records the clock after every step and the learning rate at the end
    (``+callbacks.probe._target_=helpers.step_recorder``)."""

    last: StepRecorder | None = None

    def __init__(self, step_s: float) -> None:
        import pytorch_lightning as pl

        recorder = self
        self.time = 0.0
        self.elapsed: list[float] = []
        self.final_lr: float | None = None
        self.final_progress: float | None = None

        class _Callback(pl.Callback):
            def on_fit_start(self, trainer, pl_module) -> None:
                pl_module.clock.now = lambda: recorder.time

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
                recorder.time += step_s

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                recorder.elapsed.append(pl_module.clock.elapsed())

            def on_train_end(self, trainer, pl_module) -> None:
                recorder.final_lr = trainer.optimizers[0].param_groups[0]["lr"]
                recorder.final_progress = pl_module.clock.progress()

        self.callback = _Callback()
        StepRecorder.last = self


def step_recorder(step_s: float):
    return StepRecorder(step_s).callback


def signal_at_step(step: int, signum: int = 15):
    """A callback (``+callbacks.stop._target_=helpers.signal_at_step``) that sends this process
    ``signum`` (SIGTERM by default) as the training batch of ``step`` starts."""
    import signal as signals

    import pytorch_lightning as pl

    class SignalAtStep(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
            if trainer.global_step == step:
                signals.raise_signal(signum)

    return SignalAtStep()


def poison_validation(epoch: int):
    """A callback that makes the model's outputs infinite from the validation of ``epoch`` on (an
    overflow the training loss of that epoch did not see)."""
    import pytorch_lightning as pl
    import torch

    class PoisonValidation(pl.Callback):
        def on_validation_epoch_start(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking and trainer.current_epoch == epoch:
                last = [m for m in pl_module.model.modules() if isinstance(m, torch.nn.Linear)][-1]
                with torch.no_grad():
                    last.bias.fill_(float("inf"))

    return PoisonValidation()
