"""Hessian of the training loss for any ``nn.Module`` (Yao et al. 2018, "Hessian-based Analysis of
Large Batch Training and Robustness to Adversaries", Sec. 3; PyHessian, Yao et al. 2020).

Everything is built on Hessian-vector products by double backpropagation (Pearlmutter's trick),
averaged over a fixed list of batches weighted by batch size, with respect to the parameters that
require grad:

- :func:`top_eigenvalues` — power iteration with deflation (each iterate is orthogonalized
  against the eigenvectors already found), largest magnitude first;
- :func:`trace` — Hutchinson's estimator with Rademacher vectors;
- :func:`density` — stochastic Lanczos quadrature (Ghorbani et al. 2019): Ritz values and
  weights of the spectral density, and :func:`density_on_grid` to smooth them.

The model is put in eval mode while it is analysed (BatchNorm uses its running statistics, so the
Hessian is that of a fixed function, dropout is off) and put back in its previous mode afterwards;
its weights are never changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zoo.analysis.common import eval_mode
from zoo.analysis.landscape import evaluate, perturbed

Vector = list[torch.Tensor]
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _params(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _dot(a: Vector, b: Vector) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def _normalize(v: Vector) -> Vector:
    norm = math.sqrt(float(_dot(v, v)))
    return [x / (norm + 1e-12) for x in v]


def _orthogonalize(v: Vector, basis: Sequence[Vector]) -> Vector:
    for b in basis:
        coeff = _dot(v, b)
        v = [x - coeff * y for x, y in zip(v, b, strict=True)]
    return _normalize(v)


def _random(params: list[nn.Parameter], gen: torch.Generator, rademacher: bool) -> Vector:
    out = []
    for p in params:
        if rademacher:
            r = torch.randint(0, 2, p.shape, generator=gen).to(p) * 2 - 1
        else:
            r = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p)
        out.append(r)
    return out


def hvp(model: nn.Module, criterion: Criterion, batches: Iterable, vector: Vector) -> Vector:
    """``H v`` of the mean loss over ``batches`` (each weighted by its size)."""
    params = _params(model)
    total = [torch.zeros_like(p) for p in params]
    n = 0
    with eval_mode(model):
        for x, y in batches:
            out = model(x)
            loss = criterion(out[0] if isinstance(out, tuple) else out, y)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            hv = torch.autograd.grad(grads, params, grad_outputs=vector, allow_unused=True)
            for t, h in zip(total, hv, strict=True):
                if h is not None:
                    t.add_(h.detach(), alpha=len(y))
            n += len(y)
    if n == 0:
        raise ValueError("no batches to compute the Hessian on")
    return [t / n for t in total]


def top_eigenvalues(
    model: nn.Module,
    criterion: Criterion,
    batches: Iterable,
    k: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int = 0,
) -> tuple[list[float], list[Vector]]:
    """The ``k`` eigenvalues of largest magnitude and their unit eigenvectors (power iteration
    with deflation), largest magnitude first.

    Stops an eigenvalue when it changes by less than ``tol`` relative between iterations.
    """
    batches = list(batches)
    params = _params(model)
    gen = torch.Generator().manual_seed(seed)
    values: list[float] = []
    vectors: list[Vector] = []
    for _ in range(k):
        v = _orthogonalize(_random(params, gen, rademacher=False), vectors)
        eigenvalue: float | None = None
        for _ in range(max_iter):
            hv = hvp(model, criterion, batches, v)
            new = float(_dot(hv, v))
            v = _orthogonalize(hv, vectors)
            if eigenvalue is not None and abs(new - eigenvalue) <= tol * (abs(eigenvalue) + 1e-6):
                eigenvalue = new
                break
            eigenvalue = new
        values.append(float(eigenvalue))
        vectors.append(v)
    # With close eigenvalues and few iterations, deflation can find a larger one later.
    order = sorted(range(k), key=lambda i: -abs(values[i]))
    return [values[i] for i in order], [vectors[i] for i in order]


def trace(
    model: nn.Module,
    criterion: Criterion,
    batches: Iterable,
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int = 0,
) -> float:
    """Hutchinson's estimate ``E[vᵀHv]`` (Rademacher v), stopped when the running mean settles."""
    batches = list(batches)
    params = _params(model)
    gen = torch.Generator().manual_seed(seed)
    samples: list[float] = []
    mean = 0.0
    for i in range(max_iter):
        v = _random(params, gen, rademacher=True)
        samples.append(float(_dot(hvp(model, criterion, batches, v), v)))
        new_mean = sum(samples) / len(samples)
        if i >= 1 and abs(new_mean - mean) <= tol * (abs(mean) + 1e-6):
            return new_mean
        mean = new_mean
    return mean


def density(
    model: nn.Module,
    criterion: Criterion,
    batches: Iterable,
    n_iter: int = 100,
    n_v: int = 1,
    seed: int = 0,
) -> tuple[list[float], list[float]]:
    """Stochastic Lanczos quadrature: Ritz values (nodes) and weights summing to 1."""
    batches = list(batches)
    params = _params(model)
    dim = sum(p.numel() for p in params)
    gen = torch.Generator().manual_seed(seed)
    nodes: list[float] = []
    weights: list[float] = []
    for _ in range(n_v):
        v = _normalize(_random(params, gen, rademacher=True))
        basis: list[Vector] = [v]
        alphas: list[float] = []
        betas: list[float] = []
        w_prev: Vector | None = None
        for i in range(min(n_iter, dim)):
            w = hvp(model, criterion, batches, basis[-1])
            alpha = float(_dot(w, basis[-1]))
            alphas.append(alpha)
            w = [a - alpha * b for a, b in zip(w, basis[-1], strict=True)]
            if w_prev is not None:
                w = [a - betas[-1] * b for a, b in zip(w, w_prev, strict=True)]
            for b in basis:  # full re-orthogonalization keeps the Ritz values honest
                c = _dot(w, b)
                w = [x - c * y for x, y in zip(w, b, strict=True)]
            beta = math.sqrt(float(_dot(w, w)))
            if i == min(n_iter, dim) - 1 or beta < 1e-8:
                break
            betas.append(beta)
            w_prev = basis[-1]
            basis.append([x / beta for x in w])
        m = len(alphas)
        tri = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if m > 1:
            off = torch.tensor(betas[: m - 1], dtype=torch.float64)
            tri += torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(tri)
        nodes += evals.tolist()
        weights += (evecs[0] ** 2 / n_v).tolist()
    return nodes, weights


def density_on_grid(
    nodes: Sequence[float], weights: Sequence[float], grid: torch.Tensor, sigma: float
) -> torch.Tensor:
    """Gaussian-smoothed spectral density ``Σ wᵢ N(x; λᵢ, σ²)`` on ``grid``."""
    lam = torch.tensor(nodes, dtype=torch.float64)[None, :]
    w = torch.tensor(weights, dtype=torch.float64)[None, :]
    x = grid.to(torch.float64)[:, None]
    kernel = torch.exp(-((x - lam) ** 2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
    return (kernel * w).sum(1)


def loss_along(
    model: nn.Module,
    criterion: Criterion,
    batches: Iterable,
    vector: Vector,
    epsilons: Sequence[float],
) -> list[float]:
    """Loss at ``θ + ε v`` for each ε (Yao et al. Fig. 4); the weights are restored."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    direction = dict(zip(names, vector, strict=True))
    batches = list(batches)
    losses = []
    with perturbed(model, [direction]) as set_point:
        for eps in epsilons:
            set_point([eps])
            losses.append(evaluate(model, batches, criterion)[0])
    return losses


def run(cfg) -> dict:
    """``python evaluate.py task=hessian ckpt_path=PATH [task.k=3] [task.num_images=1000]``."""
    from pathlib import Path

    from zoo.analysis.landscape import fixed_batches
    from zoo.checkpoint import load_checkpoint_and_data
    from zoo.errors import UserError
    from zoo.io import atomic_write_figure, atomic_write_json

    task = cfg.task
    if int(task.k) < 1 or int(task.max_iter) < 1:
        raise UserError(f"task.k={task.k} and task.max_iter={task.max_iter} must be >= 1")
    model, info, dm = load_checkpoint_and_data(cfg, "hessian", "fit")
    batches = fixed_batches(dm, task.num_images, int(task.batch_size), split=task.split)
    criterion = F.cross_entropy
    eigenvalues, eigenvectors = top_eigenvalues(
        model, criterion, batches, int(task.k), int(task.max_iter), float(task.tol)
    )
    tr = trace(model, criterion, batches, int(task.max_iter), float(task.tol))
    nodes, weights = density(model, criterion, batches, int(task.lanczos_iter), 1)
    epsilons = torch.linspace(-task.eps_range, task.eps_range, 41).tolist()
    along = loss_along(model, criterion, batches, eigenvectors[0], epsilons)
    result = {
        "model": info["model"],
        "checkpoint": str(cfg.ckpt_path),
        "num_images": sum(len(y) for _, y in batches),
        "top_eigenvalues": eigenvalues,
        "trace": tr,
        "density": {"nodes": nodes, "weights": weights},
        "loss_along_top_eigenvector": {"epsilon": epsilons, "loss": along},
        "settings": {k: task[k] for k in ("k", "max_iter", "tol", "lanczos_iter", "split")},
    }
    out = Path(cfg.output_dir)
    atomic_write_json(out / "hessian.json", result)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.plot(epsilons, along, "b.-")
    ax.set(
        xlabel="ε along the top eigenvector",
        ylabel="train loss",
        title=f"λ₁ = {eigenvalues[0]:.3g}",
    )
    atomic_write_figure(out / "loss_along_top_eigenvector.png", fig)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    lo, hi = min(nodes), max(nodes)
    pad = 0.05 * (hi - lo + 1e-6)
    grid = torch.linspace(lo - pad, hi + pad, 400)
    ax.semilogy(grid, density_on_grid(nodes, weights, grid, (hi - lo + 1e-6) / 100) + 1e-12)
    ax.set(xlabel="eigenvalue", ylabel="density (SLQ)")
    atomic_write_figure(out / "density.png", fig)
    print(f"top eigenvalues {eigenvalues}, trace {tr:.4g}; written {out / 'hessian.json'}")
    return result
