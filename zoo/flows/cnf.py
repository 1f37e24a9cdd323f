"""Continuous normalizing flows on torchdiffeq: ``log_prob(x)``, ``sample(n)``, NFE counted.

Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential Equations" (NeurIPS 2018, §4):
samples of a base density p0 at t0 = 0 move along dz/dt = f(z, t) to t1, and the log-density follows
d log p(z(t))/dt = −tr(∂f/∂z(t)) (the instantaneous change of variables). As in torchdiffeq's
``examples/cnf.py``, the data live at t1 and the base N(0, base_std²·I) at t0:

- ``log_prob(x)`` integrates (z, ℓ) backward from (x, 0) at t1 to t0 with dℓ/dt = −tr(∂f/∂z), so
  log p(x) = log p0(z(t0)) − ℓ(t0);
- ``sample_with_log_prob(n)`` integrates forward from z0 ~ p0 and returns log p0(z0) + ℓ(t1).

The trace is exact (one backward pass per dimension; the toys) or Hutchinson's estimate with one
probe per solve, fixed along the trajectory (Grathwohl et al., FFJORD, ICLR 2019, §3.1). Function
evaluations are counted like ODE-Net's (``zoo.models.odenet``): ``step_stats()`` gives the forward
and, with the adjoint, backward NFE since ``reset_step_stats()``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from zoo.flows.divergence import PROBES, divergence_exact, divergence_hutchinson, sample_probe
from zoo.flows.dynamics import ConcatSquashNet, HyperNetDynamics
from zoo.models.odenet import check_solver_options

DIVERGENCES = ("exact", "hutchinson")


class AugmentedDynamics(nn.Module):
    """(dz/dt, dℓ/dt) = (f(z, t), −tr ∂f/∂z) for torchdiffeq; counts its evaluations."""

    def __init__(
        self, dynamics: nn.Module, divergence: str = "exact", probe: str = "rademacher"
    ) -> None:
        super().__init__()
        if divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
        if probe not in PROBES:
            raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
        self.dynamics = dynamics
        self.divergence, self.probe_kind = divergence, probe
        self.probe: torch.Tensor | None = None  # drawn once per solve (Hutchinson)
        self.with_log_density = True
        self.nfe = 0

    def forward(
        self, t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.nfe += 1
        z = state[0]
        if not self.with_log_density:
            return self.dynamics(t, z), torch.zeros_like(state[1])
        # The trace needs ∂f/∂z even when the solve itself runs without gradients (evaluation,
        # the adjoint's forward pass); its graph is kept only when gradients flow through it.
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            dz = self.dynamics(t, z)
            if self.divergence == "exact":
                div = divergence_exact(dz, z, create_graph)
            else:
                div = divergence_hutchinson(dz, z, self.probe, create_graph)
        if not create_graph:
            dz, div = dz.detach(), div.detach()
        return dz, -div


class CNF(nn.Module):
    """A continuous normalizing flow of ``shape``-d samples (batch first) with base N(0, σ²·I)."""

    def __init__(
        self,
        dynamics: nn.Module,
        shape: tuple[int, ...],
        *,
        t1: float = 1.0,
        base_std: float = 1.0,
        solver: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        step_size: float | None = None,
        adjoint: bool = False,
        divergence: str = "exact",
        probe: str = "rademacher",
    ) -> None:
        super().__init__()
        check_solver_options(solver, rtol, atol, step_size)
        if not t1 > 0:
            raise ValueError(f"t1 must be > 0 (the flow runs over [0, t1]), got {t1}")
        if not base_std > 0:
            raise ValueError(f"base_std must be > 0, got {base_std}")
        self.func = AugmentedDynamics(dynamics, divergence, probe)
        self.shape = tuple(int(s) for s in shape)
        self.t1, self.base_std = float(t1), float(base_std)
        self.solver, self.rtol, self.atol = solver, rtol, atol
        self.options = {"step_size": step_size} if step_size is not None else None
        self.adjoint = adjoint
        self.nfe_forward = 0

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, σ²·I), summed over all but the batch dimension."""
        flat = z.reshape(len(z), -1)
        var = self.base_std**2
        return -0.5 * (flat.square().sum(1) / var + flat.shape[1] * math.log(2 * math.pi * var))

    def integrate(
        self, z: torch.Tensor, times: torch.Tensor, log_density: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """States (z(t), ℓ(t)) at ``times`` (stacked along a leading time axis) from z at
        ``times[0]``, with ℓ(times[0]) = 0 and dℓ/dt = −tr ∂f/∂z (zero if not ``log_density``)."""
        if tuple(z.shape[1:]) != self.shape:
            raise ValueError(f"expected samples (batch, *{self.shape}), got {tuple(z.shape)}")
        if log_density and torch.is_inference_mode_enabled():
            # The trace needs autograd, which inference mode (Lightning's evaluation) turns off
            # for good: leave it, on a normal copy of z, still without a graph.
            with torch.inference_mode(False), torch.no_grad():
                return self.integrate(z.clone(), times.clone(), log_density)
        self.func.with_log_density = log_density
        if self.func.divergence == "hutchinson":
            self.func.probe = sample_probe(z, self.func.probe_kind)
        solve = odeint_adjoint if self.adjoint and torch.is_grad_enabled() else odeint
        before = self.func.nfe
        zs, ells = solve(
            self.func,
            (z, torch.zeros(len(z), dtype=z.dtype, device=z.device)),
            times.to(z),
            rtol=self.rtol,
            atol=self.atol,
            method=self.solver,
            options=self.options,
        )
        self.nfe_forward += self.func.nfe - before
        return zs, ells

    def _times(self, reverse: bool, like: torch.Tensor, steps: int = 2) -> torch.Tensor:
        times = torch.linspace(0.0, self.t1, steps, dtype=like.dtype, device=like.device)
        return times.flip(0) if reverse else times

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) at t1, one value per sample: backward solve to the base density."""
        zs, ells = self.integrate(x, self._times(reverse=True, like=x))
        return self.base_log_prob(zs[-1]) - ells[-1]

    def base_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        ref = next(self.parameters())
        z = torch.randn((n, *self.shape), generator=generator, dtype=ref.dtype)
        return z.to(ref.device) * self.base_std

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples at t1: base samples carried forward (no log-density: cheaper)."""
        z0 = self.base_sample(n, generator)
        zs, _ = self.integrate(z0, self._times(reverse=False, like=z0), log_density=False)
        return zs[-1]

    def sample_with_log_prob(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples and their log p, from the forward solve: log p0(z0) + ℓ(t1)."""
        z0 = self.base_sample(n, generator)
        zs, ells = self.integrate(z0, self._times(reverse=False, like=z0))
        return zs[-1], self.base_log_prob(z0) + ells[-1]

    def trajectory(self, z0: torch.Tensor, steps: int) -> torch.Tensor:
        """z(t) at ``steps`` evenly spaced times from t0 to t1, from base samples ``z0``."""
        zs, _ = self.integrate(z0, self._times(False, z0, steps), log_density=False)
        return zs

    def reset_step_stats(self) -> None:
        self.func.nfe = 0
        self.nfe_forward = 0

    def step_stats(self) -> dict[str, float]:
        """Function evaluations since the last reset: forward solve(s) and adjoint backward."""
        return {"nfe_forward": self.nfe_forward, "nfe_backward": self.func.nfe - self.nfe_forward}


FLOWS = ("cnf_hypernet", "cnf_concatsquash")


def create_cnf(
    name: str,
    shape: tuple[int, ...],
    *,
    dynamics: dict | None = None,
    **flow_kwargs,
) -> CNF:
    """A CNF named by its dynamics: ``cnf_hypernet`` (torchdiffeq's gated tanh units; vectors) or
    ``cnf_concatsquash`` (FFJORD's layers: an MLP for vectors, 3×3 convolutions for images).
    ``dynamics`` holds the dynamics' options, ``flow_kwargs`` the :class:`CNF`'s."""
    if name not in FLOWS:
        raise ValueError(f"unknown flow {name!r}; use one of {', '.join(FLOWS)}")
    shape = tuple(int(s) for s in shape)
    if name == "cnf_hypernet" and len(shape) != 1:
        raise ValueError(f"cnf_hypernet acts on vectors, got samples of shape {shape}")
    kwargs = dict(dynamics or {})
    func = (
        HyperNetDynamics(shape[0], **kwargs)
        if name == "cnf_hypernet"
        else ConcatSquashNet(shape, **kwargs)
    )
    return CNF(func, shape, **flow_kwargs)


def logit_transform(x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """y = logit(α + (1 − 2α)·x) for x in [0, 1] and log|dy/dx| summed per sample (FFJORD's
    ``LogitTransform``, α = 1e-6 for MNIST): the flow models y, unbounded, instead of x."""
    s = alpha + (1 - 2 * alpha) * x
    y = torch.log(s) - torch.log1p(-s)
    log_det = math.log(1 - 2 * alpha) - torch.log(s) - torch.log1p(-s)
    return y, log_det.reshape(len(x), -1).sum(1)


def logit_inverse(y: torch.Tensor, alpha: float) -> torch.Tensor:
    return ((torch.sigmoid(y) - alpha) / (1 - 2 * alpha)).clamp(0, 1)
