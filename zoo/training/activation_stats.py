"""Activation and gradient statistics per layer (``callbacks.stats=true``).

The "visualise the model in action" aid of Goodfellow, Bengio & Courville (2016, §11.5): every
``every_n_steps`` training steps, the pre-activation (the input of every activation function) and
the gradient of every parameter go to TensorBoard as histograms (when the tensorboard logger is
on), and two counts per activation site accumulate over the logged batches:

- **dead units** (ReLU family): channels whose pre-activation was never positive — their output and
  gradient are zero on every input seen, so they no longer learn;
- **saturated units**: channels whose local derivative was below 1 % of the function's peak on at
  least 99 % of their values (a sigmoid or tanh stuck at its asymptotes; for a ReLU, nearly dead).

At the end of training the worst layers are printed and all are written to
``activation_stats.json`` and ``activation_stats.md`` in the run directory.

Activation calls are intercepted with a ``TorchFunctionMode``, so functional calls (``F.relu`` in
a block's ``forward``) count as well as ``nn.ReLU`` modules; a site is named by the innermost module
running, with ``#k`` for the k-th invocation of a module reused inside its parent (ResNet blocks
apply one ``nn.ReLU`` twice) and ``/relu#k`` for the k-th functional call in a module. A channel
is a unit: dimension 1 of the pre-activation (a feature map or a neuron).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from zoo.io import atomic_write_json, atomic_write_text

# Activation functions whose input is a pre-activation, and the name a site shows.
ACTIVATIONS: dict[Any, str] = {
    F.relu: "relu",
    torch.relu: "relu",
    torch.relu_: "relu",
    Tensor.relu: "relu",
    Tensor.relu_: "relu",
    F.relu6: "relu6",
    F.leaky_relu: "leaky_relu",
    F.elu: "elu",
    F.gelu: "gelu",
    F.silu: "silu",
    torch.sigmoid: "sigmoid",
    Tensor.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    Tensor.tanh: "tanh",
    F.hardtanh: "hardtanh",
}
DEAD_CAN_HAPPEN = {"relu", "relu6", "hardtanh"}  # zero gradient for every input below a bound
NOT_INPLACE = {torch.relu_: torch.relu, Tensor.relu_: Tensor.relu}
FLAT_DERIVATIVE = 0.01  # a value saturates where the derivative is below 1 % of its peak
SATURATED_SHARE = 0.99  # a unit saturates when at least 99 % of its values do
HISTOGRAM_VALUES = 1 << 16  # values kept per site and logged step (evenly spaced)


class _SiteStats:
    """Per-unit counts of one activation site over the logged batches."""

    def __init__(self, function: str, units: int) -> None:
        self.function = function
        self.positive = torch.zeros(units, dtype=torch.bool)
        self.values = torch.zeros(units, dtype=torch.long)
        self.flat = torch.zeros(units, dtype=torch.long)

    def update(self, z: Tensor, derivative: Tensor, peak: float) -> None:
        per_unit = z.transpose(0, 1).reshape(z.shape[1], -1) if z.dim() > 1 else z.reshape(1, -1)
        d = derivative.transpose(0, 1).reshape(per_unit.shape) if z.dim() > 1 else derivative
        if len(per_unit) != len(self.positive):  # another shape at the same site: start over
            self.__init__(self.function, len(per_unit))
        self.positive |= (per_unit > 0).any(1).cpu()
        self.values += per_unit.shape[1]
        self.flat += (d.reshape(per_unit.shape).abs() < FLAT_DERIVATIVE * peak).sum(1).cpu()

    def summary(self) -> dict[str, Any]:
        units = len(self.positive)
        seen = self.values > 0
        saturated = seen & (self.flat >= SATURATED_SHARE * self.values)
        dead = seen & ~self.positive if self.function in DEAD_CAN_HAPPEN else None
        return {
            "function": self.function,
            "units": units,
            "dead_fraction": float(dead.sum()) / units if dead is not None else None,
            "saturated_fraction": float(saturated.sum()) / units,
            "values_per_unit": int(self.values.max()) if units else 0,
        }

    def state(self) -> dict[str, Any]:
        return {"function": self.function, "positive": self.positive, "values": self.values,
                "flat": self.flat}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _SiteStats:
        site = cls(state["function"], len(state["positive"]))
        site.positive, site.values, site.flat = state["positive"], state["values"], state["flat"]
        return site


class _Frame:
    """One running module invocation: its site label and the calls counted inside it."""

    def __init__(self, label: str, leaf: bool) -> None:
        self.label, self.leaf = label, leaf
        self.children: dict[str, int] = {}
        self.activations = 0


class _Recorder(TorchFunctionMode):
    """Sees every activation call while a logged step runs forward."""

    def __init__(self, stats: ActivationStats) -> None:
        super().__init__()
        self.stats = stats

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = ACTIVATIONS.get(func)
        if name is not None and args and isinstance(args[0], Tensor) and self.stats.frames:
            self.stats.record(func, name, args, kwargs)
        return func(*args, **kwargs)


class ActivationStats(pl.Callback):
    """Histograms, dead and saturated units per activation site every ``every_n_steps`` steps, and
    a table of the ``top`` worst sites at the end (printed, and written to ``output_dir``)."""

    def __init__(self, output_dir: str | Path, every_n_steps: int = 50, top: int = 10) -> None:
        if every_n_steps < 1:
            raise ValueError(f"callbacks.activation_stats.every_n_steps={every_n_steps}: use >= 1")
        self.output_dir = Path(output_dir)
        self.every_n_steps = int(every_n_steps)
        self.top = int(top)
        self.sites: dict[str, _SiteStats] = {}
        self.logged_steps = 0
        self.frames: list[_Frame] = []
        self._names: dict[int, tuple[str, bool]] = {}
        self._handles: list[Any] = []
        self._mode: _Recorder | None = None
        self._step_values: dict[str, list[Tensor]] = {}
        self._peaks: dict[tuple, float] = {}

    @property
    def state_key(self) -> str:
        return "ActivationStats"

    # --- recording ---------------------------------------------------------------------------
    def _push(self, module: nn.Module, args: Any) -> None:
        name, leaf = self._names.get(id(module), (None, False))
        if name is None:
            return
        parent = self.frames[-1] if self.frames else self._root
        k = parent.children.get(name, 0)
        parent.children[name] = k + 1
        self.frames.append(_Frame(name if k == 0 else f"{name}#{k + 1}", leaf))

    def _pop(self, module: nn.Module, args: Any, output: Any) -> None:
        if id(module) in self._names and self.frames:
            self.frames.pop()

    def record(self, func, name: str, args: tuple, kwargs: dict) -> None:
        frame = self.frames[-1]
        index, frame.activations = frame.activations, frame.activations + 1
        site = frame.label if frame.leaf else f"{frame.label}/{name}"
        site += f"#{index + 1}" if index else ""
        z = args[0].detach()
        func = NOT_INPLACE.get(func, func)
        kwargs = {key: v for key, v in kwargs.items() if key != "inplace"}
        derivative = self._derivative(func, z, args[1:], kwargs)
        key = (func, repr(args[1:]), repr(kwargs))
        if key not in self._peaks:
            grid = torch.linspace(-20, 20, 4001, dtype=z.dtype, device=z.device)
            self._peaks[key] = float(self._derivative(func, grid, args[1:], kwargs).abs().max())
        units = z.shape[1] if z.dim() > 1 else 1
        stats = self.sites.setdefault(site, _SiteStats(name, units))
        stats.update(z, derivative, self._peaks[key])
        flat = z.flatten()
        stride = max(1, flat.numel() // HISTOGRAM_VALUES)
        self._step_values.setdefault(site, []).append(flat[::stride].float().cpu())

    @staticmethod
    def _derivative(func, z: Tensor, rest: tuple, kwargs: dict) -> Tensor:
        """The elementwise derivative of the activation at ``z``."""
        with torch.enable_grad():
            x = z.detach().clone().requires_grad_()
            (grad,) = torch.autograd.grad(func(x, *rest, **kwargs).sum(), x)
        return grad

    def _start(self, pl_module: pl.LightningModule) -> None:
        self._root = _Frame("", leaf=False)
        self.frames = []
        self._handles = [
            nn.modules.module.register_module_forward_pre_hook(self._push),
            nn.modules.module.register_module_forward_hook(self._pop, always_call=True),
        ]
        self._mode = _Recorder(self)
        self._mode.__enter__()

    def _stop(self) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
        for handle in self._handles:
            handle.remove()
        self._handles, self.frames = [], []

    # --- Lightning hooks -----------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = getattr(pl_module, "model", pl_module)
        self._names = {
            id(m): (name or "model", not any(True for _ in m.children()))
            for name, m in model.named_modules()
        }

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._start(pl_module)

    def on_before_backward(self, trainer, pl_module, loss: Tensor) -> None:
        self._stop()

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._step_values:
            return
        self.logged_steps += 1
        writer = next(
            (lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None
        )
        step = trainer.global_step
        if writer is not None:
            for site, values in self._step_values.items():
                writer.add_histogram(f"preactivation/{site}", torch.cat(values), step)
                summary = self.sites[site].summary()
                if summary["dead_fraction"] is not None:
                    writer.add_scalar(f"dead_fraction/{site}", summary["dead_fraction"], step)
                writer.add_scalar(f"saturated_fraction/{site}", summary["saturated_fraction"], step)
            model = getattr(pl_module, "model", pl_module)
            for name, p in model.named_parameters():
                if p.grad is not None:
                    writer.add_histogram(f"gradient/{name}", p.grad.detach().float().cpu(), step)
        self._step_values = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._stop()  # a step that skipped backward
        self._step_values = {}

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._stop()

    # --- the report ----------------------------------------------------------------------------
    def table(self) -> list[dict[str, Any]]:
        """Every site, worst first: most dead units, then most saturated ones."""
        rows = [{"site": site, **stats.summary()} for site, stats in self.sites.items()]
        return sorted(
            rows, key=lambda r: (-(r["dead_fraction"] or 0.0), -r["saturated_fraction"], r["site"])
        )

    def report(self, rows: list[dict[str, Any]]) -> str:
        header = ("site", "function", "units", "dead", "saturated")
        cells = [
            (r["site"], r["function"], str(r["units"]),
             "–" if r["dead_fraction"] is None else f"{100 * r['dead_fraction']:.1f} %",
             f"{100 * r['saturated_fraction']:.1f} %")
            for r in rows
        ]  # fmt: skip
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(c) + " |" for c in cells),
        ]
        return "\n".join(lines) + "\n"

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()
        rows = self.table()
        if not rows:
            return
        caption = (
            f"Activation statistics over {self.logged_steps} logged steps (every "
            f"{self.every_n_steps}): dead = never positive, saturated = derivative < 1 % of its "
            f"peak on >= 99 % of the values"
        )
        atomic_write_json(
            self.output_dir / "activation_stats.json",
            {"logged_steps": self.logged_steps, "every_n_steps": self.every_n_steps, "sites": rows},
        )
        atomic_write_text(
            self.output_dir / "activation_stats.md", caption + "\n\n" + self.report(rows)
        )
        print(f"\n{caption}; the {min(self.top, len(rows))} worst sites:")
        print(self.report(rows[: self.top]), flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {
            "logged_steps": self.logged_steps,
            "sites": {site: stats.state() for site, stats in self.sites.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.logged_steps = int(state_dict.get("logged_steps", 0))
        self.sites = {
            site: _SiteStats.from_state(s) for site, s in state_dict.get("sites", {}).items()
        }
