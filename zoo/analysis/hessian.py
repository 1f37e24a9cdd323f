"""Hessian of the training loss for any ``nn.Module`` (Yao et al. 2018, "Hessian-based Analysis of
Large Batch Training and Robustness to Adversaries", Sec. 3; PyHessian, Yao et al. 2020).

Everything is built on Hessian-vector products by double backpropagation (Pearlmutter's trick),
averaged over a fixed list of batches weighted by batch size, with respect to the parameters that
require grad:

- :func:`top_eigenvalues` — power iteration with deflation (each iterate is orthogonalized
  against the eigenvectors already found), largest magnitude first;
- :func:`trace` — Hutchinson's estimator with Rademacher vectors, drawn until the standard error
  of the mean is at most ``rtol`` of the mean (and at least ``min_iter`` probes), with its
  standard error on request;
- :func:`density` — stochastic Lanczos quadrature (Ghorbani et al. 2019): Ritz values and
  weights of the spectral density (:func:`lanczos_runs` per random start, :func:`slq_spread`
  for the spread over the starts), and :func:`density_on_grid` to smooth them.

The model is put in eval mode while it is analysed (BatchNorm uses its running statistics, so the
Hessian is that of a fixed function, dropout is off) and put back in its previous mode afterwards;
its weights are never changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from zoo.analysis.landscape import evaluate, perturbed
from zoo.evaluation.uncertainty import mean_stderr, precise_enough
from zoo.io import atomic_write_figure, pyplot
from zoo.models.base import eval_mode, main_output

Vector = list[torch.Tensor]
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def trainable_params(model: nn.Module) -> list[nn.Parameter]:
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
    params = trainable_params(model)
    total = [torch.zeros_like(p) for p in params]
    n = 0
    with eval_mode(model):
        for x, y in batches:
            out = model(x)
            loss = criterion(main_output(out), y)
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
    params = trainable_params(model)
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


def trace_samples(
    model: nn.Module,
    criterion: Criterion,
    batches: Iterable,
    max_iter: int = 2000,
    rtol: float = 0.01,
    min_iter: int = 30,
    seed: int = 0,
) -> list[float]:
    """Hutchinson's probes ``vᵀHv`` (Rademacher v, unbiased for tr H), drawn until their mean's
    standard error is at most ``rtol`` × |mean| after at least ``min_iter`` probes, or
    ``max_iter`` probes (:func:`zoo.evaluation.uncertainty.precise_enough`)."""
    batches = list(batches)
    params = trainable_params(model)
    gen = torch.Generator().manual_seed(seed)
    samples: list[float] = []
    while len(samples) < max_iter and not precise_enough(samples, rtol, min_iter):
        v = _random(params, gen, rademacher=True)
        samples.append(float(_dot(hvp(model, criterion, batches, v), v)))
    return samples


def trace(
    model: nn.Module,
    criterion: Criterion,
    batches: Iterable,
    max_iter: int = 2000,
    rtol: float = 0.01,
    min_iter: int = 30,
    seed: int = 0,
    return_stderr: bool = False,
) -> float | tuple[float, float]:
    """Hutchinson's estimate of tr H (:func:`trace_samples`); with ``return_stderr`` the pair
    ``(mean, standard error)``."""
    samples = trace_samples(model, criterion, batches, max_iter, rtol, min_iter, seed)
    mean, stderr = mean_stderr(samples)
    return (mean, stderr) if return_stderr else mean


def lanczos_runs(
    model: nn.Module,
    criterion: Criterion,
    batches: Iterable,
    n_iter: int = 100,
    n_v: int = 1,
    seed: int = 0,
) -> list[tuple[list[float], list[float]]]:
    """Stochastic Lanczos quadrature, one run per random start: Ritz values (nodes) and weights
    summing to 1 (Ghorbani et al. 2019, Sec. 3)."""
    batches = list(batches)
    params = trainable_params(model)
    dim = sum(p.numel() for p in params)
    gen = torch.Generator().manual_seed(seed)
    runs = []
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
        runs.append((evals.tolist(), (evecs[0] ** 2).tolist()))
    return runs


def density(
    model: nn.Module,
    criterion: Criterion,
    batches: Iterable,
    n_iter: int = 100,
    n_v: int = 1,
    seed: int = 0,
) -> tuple[list[float], list[float]]:
    """The SLQ density averaged over ``n_v`` random starts: nodes and weights summing to 1."""
    runs = lanczos_runs(model, criterion, batches, n_iter, n_v, seed)
    nodes = [x for run_nodes, _ in runs for x in run_nodes]
    weights = [w / len(runs) for _, run_weights in runs for w in run_weights]
    return nodes, weights


def slq_spread(runs: Sequence[tuple[Sequence[float], Sequence[float]]], dim: int) -> dict:
    """Mean ± standard error over the random starts of what each SLQ run estimates: the trace
    (``dim · Σ wᵢλᵢ``), the spectrum's edges and the weight on negative eigenvalues."""
    per_run = {
        "trace": [dim * sum(w * x for x, w in zip(n, ws, strict=True)) for n, ws in runs],
        "lambda_min": [min(n) for n, _ in runs],
        "lambda_max": [max(n) for n, _ in runs],
        "negative_weight": [sum(w for x, w in zip(n, ws, strict=True) if x < 0) for n, ws in runs],
    }
    return {
        key: dict(zip(("mean", "stderr"), mean_stderr(v), strict=True))
        for key, v in per_run.items()
    }


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


def plot_loss_along(
    epsilons: Sequence[float], losses: Sequence[float], eigenvalue: float, path: Path
) -> Path:
    """The loss along the top eigenvector (:func:`loss_along`) against ε."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.plot(epsilons, losses, "b.-")
    ax.set(
        xlabel="ε along the top eigenvector",
        ylabel="train loss",
        title=f"λ₁ = {eigenvalue:.3g}",
    )
    return atomic_write_figure(path, fig)


def plot_density(runs: Sequence[tuple[Sequence[float], Sequence[float]]], path: Path) -> Path:
    """The smoothed SLQ density of :func:`lanczos_runs` (log scale): the mean over the random
    starts with a band of ± its standard error."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    lo = min(min(n) for n, _ in runs)
    hi = max(max(n) for n, _ in runs)
    pad = 0.05 * (hi - lo + 1e-6)
    grid = torch.linspace(lo - pad, hi + pad, 400)
    curves = torch.stack([density_on_grid(n, w, grid, (hi - lo + 1e-6) / 100) for n, w in runs])
    mean = curves.mean(0)
    band = curves.std(0) / len(runs) ** 0.5 if len(runs) > 1 else torch.zeros_like(mean)
    ax.fill_between(grid, (mean - band).clamp_min(1e-12), mean + band + 1e-12, alpha=0.3)
    ax.semilogy(grid, mean + 1e-12)
    ax.set(xlabel="eigenvalue", ylabel="density (SLQ)", title=f"mean ± s.e. of {len(runs)} starts")
    return atomic_write_figure(path, fig)
