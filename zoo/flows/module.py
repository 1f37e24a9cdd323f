"""Maximum-likelihood training of a continuous normalizing flow through the zoo's trainer.

``python train.py experiment=cnf_moons`` builds this module from ``lightning_module=cnf``
(conf/lightning_module/cnf.yaml) instead of the classifier: same optimizer and schedule groups,
training clock, checkpoints, resume and ``results.json``. The loss is the negative log-likelihood
of the batch (nats per point) for 2-D points; for images it is bits per dimension as in FFJORD
(Grathwohl et al. 2019, §4.2): 8-bit pixels are dequantized with uniform noise, x = (k + u)/256,
mapped to logit space (α = 1e-6), and bits/dim = −(log p(x) − D·log 256) / (D·log 2). Validation
and test report ``nll`` (nats per sample) and, for images, ``bits_per_dim``, with the forward NFE
of evaluation. The best checkpoint's test run writes the figures (``zoo.flows.plots``) into
``plots_dir``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torchmetrics import MeanMetric

from zoo.errors import UserError
from zoo.flows import plots
from zoo.flows.cnf import create_cnf, logit_transform
from zoo.training.callbacks import TrainingClock
from zoo.training.module import NonFiniteLossError, ZooClassifier, check_finite_validation

log = logging.getLogger(__name__)


class CNFDensityModule(pl.LightningModule):
    """A CNF (``create_cnf(model_name, data shape, **model_kwargs)``) fit by maximum likelihood.

    Hyper-parameters saved in every checkpoint: ``model_name``, ``model_kwargs`` and ``data``
    (kind, shape, name), enough to rebuild the flow from the checkpoint alone.
    """

    # The classifier's recipe, shared: optimizer and schedule from the optim/scheduler groups,
    # the training clock (and budget), per-epoch seeding, resumable random state, NFE logging.
    configure_optimizers = ZooClassifier.configure_optimizers
    steps_per_epoch = ZooClassifier.steps_per_epoch
    configure_callbacks = ZooClassifier.configure_callbacks
    on_save_checkpoint = ZooClassifier.on_save_checkpoint
    on_load_checkpoint = ZooClassifier.on_load_checkpoint
    on_train_start = ZooClassifier.on_train_start
    on_train_epoch_start = ZooClassifier.on_train_epoch_start
    on_after_backward = ZooClassifier.on_after_backward

    def __init__(
        self,
        model_name: str,
        model_kwargs: dict[str, Any],
        data: dict[str, Any],
        optim: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        seed: int = 0,
        budget_s: float | None = None,
        logit_alpha: float = 1e-6,
        plots_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if data.get("kind") not in ("points", "pixels"):
            raise UserError(
                f"lightning_module {model_name}: data {data.get('name')!r} is not a density data "
                "set; use data=toy2d or data=fashion_mnist_pixels"
            )
        try:
            self.model = create_cnf(model_name, tuple(data["shape"]), **model_kwargs)
        except (TypeError, ValueError) as err:
            raise UserError(f"lightning_module.model_kwargs: {err}") from None
        self.images = data["kind"] == "pixels"
        self.alpha = logit_alpha
        self.optim_cfg = dict(optim or {"_target_": "torch.optim.Adam", "_partial_": True})
        self.sched_cfg = dict(scheduler or {"_target_": "zoo.training.schedules.constant"})
        self.clock = TrainingClock(budget_s)
        self._rng_to_restore: torch.Tensor | None = None
        for split in ("val", "test"):
            for metric in self.metric_names():
                setattr(self, f"{split}_{metric}", MeanMetric())
        self.test_time_s: float | None = None
        self.grid_mass: float | None = None  # probability mass on the density plot's grid
        self.plots: list[str] = []

    def metric_names(self) -> tuple[str, ...]:
        return ("nll", "bits_per_dim", "nfe") if self.images else ("nll", "nfe")

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per sample: of the points, or of the 8-bit image (dequantized, in nats)."""
        if not self.images:
            return self.model.log_prob(x)
        unit = (x + torch.rand_like(x)) / 256
        y, log_det = logit_transform(unit, self.alpha)
        return self.model.log_prob(y) + log_det - self.model.dim * math.log(256)

    def bits_per_dim(self, log_likelihood: torch.Tensor) -> torch.Tensor:
        return -log_likelihood / (self.model.dim * math.log(2))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, _ = batch
        self.model.reset_step_stats()
        log_p = self.log_likelihood(x)
        loss = self.bits_per_dim(log_p).mean() if self.images else -log_p.mean()
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at step {self.global_step}; lower the "
                "learning rate or tighten the solver tolerances (lightning_module.model_kwargs)"
            )
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> None:
        x, _ = batch
        self.model.reset_step_stats()
        log_p = self.log_likelihood(x)
        getattr(self, f"{split}_nll").update(-log_p.mean(), weight=len(x))
        getattr(self, f"{split}_nfe").update(float(self.model.step_stats()["nfe_forward"]))
        if self.images:
            getattr(self, f"{split}_bits_per_dim").update(
                self.bits_per_dim(log_p).mean(), weight=len(x)
            )

    def _eval_epoch_end(self, split: str) -> None:
        values = {}
        for metric in self.metric_names():
            m = getattr(self, f"{split}_{metric}")
            values[metric] = m.compute()
            m.reset()
        if split == "val":
            check_finite_validation(self, {f"val/{k}": v for k, v in values.items()})
        for metric, value in values.items():
            self.log(f"{split}/{metric}", value, prog_bar=metric != "nfe", sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self._test_start = time.perf_counter()

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self.test_time_s = time.perf_counter() - self._test_start
        self._eval_epoch_end("test")

    def on_test_end(self) -> None:
        if self.hparams.plots_dir:
            self.plots = self.write_plots(Path(self.hparams.plots_dir))

    def write_plots(self, out: Path) -> list[str]:
        """Density and sample-flow figures (points), sample grid and trajectories (images)."""
        self.model.eval()
        start = time.perf_counter()
        if self.images:
            plots.plot_image_samples(self.model, out / "samples.png", self.alpha)
            plots.plot_image_strip(self.model, out / "sample_flow.png", self.alpha)
            written = ["samples.png", "sample_flow.png"]
        else:
            data = self.trainer.datamodule.sample(20_000)
            extent = plots.plot_extent(data)
            self.grid_mass = plots.plot_density(self.model, data, out / "density.png", extent)
            plots.plot_flow_strip(self.model, out / "sample_flow.png", extent)
            plots.save_flow_gif(self.model, out / "sample_flow.gif", extent)
            written = ["density.png", "sample_flow.png", "sample_flow.gif"]
        log.info("plots written to %s in %.1f s", out, time.perf_counter() - start)
        return [str(out / name) for name in written]

    def results(
        self, test_metrics: dict[str, float], best_score: float | None, monitor: str
    ) -> dict[str, Any]:
        """This module's entries of ``results.json``: the best value of the monitored validation
        metric, the test metrics, the time of the test and the figures written."""
        out: dict[str, Any] = {f"best_{monitor.replace('/', '_')}": best_score}
        out.update(
            {f"test_{metric}": test_metrics.get(f"test/{metric}") for metric in self.metric_names()}
        )
        out["test_time_s"] = round(self.test_time_s, 2) if self.test_time_s is not None else None
        if self.grid_mass is not None:
            out["density_mass_on_plot_grid"] = round(self.grid_mass, 5)
        out["plots"] = self.plots
        return out
