"""The divergence tr(∂f/∂z) of a dynamics f at z: exact, or Hutchinson's stochastic estimate.

Chen et al., "Neural Ordinary Differential Equations" (NeurIPS 2018, §4, Theorem 1): along
dz/dt = f(z, t) the log-density changes as d log p(z(t))/dt = −tr(∂f/∂z). The exact trace costs one
backward pass per dimension (torchdiffeq's ``examples/cnf.py`` loops over the coordinates).
Grathwohl et al., "FFJORD" (ICLR 2019, §3.1): Hutchinson's estimator tr(A) = E[εᵀAε] for any probe
with E[ε] = 0, Cov(ε) = I, one vector-Jacobian product per evaluation whatever the dimension;
Rademacher probes (±1) have the lower variance (zero when the Jacobian is diagonal).
"""

from __future__ import annotations

import torch

PROBES = ("rademacher", "gaussian")


def sample_probe(like: torch.Tensor, kind: str = "rademacher") -> torch.Tensor:
    """A probe ε shaped like ``like``: Rademacher (±1 with equal odds) or standard Gaussian."""
    if kind == "rademacher":
        return torch.randint(0, 2, like.shape, device=like.device).to(like.dtype) * 2 - 1
    if kind == "gaussian":
        return torch.randn_like(like)
    raise ValueError(f"probe must be one of {PROBES}, got {kind!r}")


def divergence_exact(f: torch.Tensor, z: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """tr(∂f/∂z) per sample (batch first): one gradient per coordinate of ``f = f(z)``."""
    div = torch.zeros(len(f), dtype=f.dtype, device=f.device)
    if not f.requires_grad:  # f does not depend on z at all
        return div
    flat_f = f.reshape(len(f), -1)
    for i in range(flat_f.shape[1]):
        (grad,) = torch.autograd.grad(
            flat_f[:, i].sum(), z, create_graph=create_graph, retain_graph=True, allow_unused=True
        )
        if grad is not None:  # None: f does not depend on z at all
            div = div + grad.reshape(len(f), -1)[:, i]
    return div


def divergence_hutchinson(
    f: torch.Tensor, z: torch.Tensor, probe: torch.Tensor, create_graph: bool
) -> torch.Tensor:
    """εᵀ(∂f/∂z)ε per sample, an unbiased estimate of the trace (one vector-Jacobian product)."""
    if not f.requires_grad:
        return torch.zeros(len(f), dtype=f.dtype, device=f.device)
    (vjp,) = torch.autograd.grad(
        f, z, grad_outputs=probe, create_graph=create_graph, allow_unused=True
    )
    if vjp is None:
        return torch.zeros(len(f), dtype=f.dtype, device=f.device)
    return (vjp * probe).reshape(len(f), -1).sum(1)
