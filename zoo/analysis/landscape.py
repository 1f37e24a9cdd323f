"""Filter-normalized loss landscapes (Li et al. 2018, "Visualizing the Loss Landscape of Neural
Nets", Sec. 4; code tomgoldstein/loss-landscape), for any ``nn.Module``.

A direction is a dict of tensors keyed like the model's ``state_dict``. ``random_direction`` draws
a Gaussian direction and rescales each filter (dim-0 slice; a Linear layer's rows count as
filters) to the norm of the matching filter of the weights, which removes the scale invariance of
ReLU networks with BatchNorm (Sec. 4). Parameters with at most one dimension (biases, BatchNorm
weights and biases) get zero with ``ignore="biasbn"`` and a copy of the weights otherwise, as in
the paper's code. ``surface`` evaluates the loss and accuracy at ``θ + α·d₁ (+ β·d₂)`` over a grid
on a fixed batch list with the model in eval mode (BatchNorm uses its running statistics), writes
the results to one ``.npz`` file every few points, and resumes from that file when rerun.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import UserError
from zoo.io import atomic_write_bytes, atomic_write_figure, pyplot
from zoo.models.base import eval_mode

Direction = dict[str, torch.Tensor]
Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


def parse_grid(spec: str | Sequence[float]) -> np.ndarray:
    """``"-1:1:51"`` (min:max:points, inclusive) or an explicit list of coordinates."""
    if isinstance(spec, str):
        parts = spec.split(":")
        try:
            lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            raise UserError(f"grid {spec!r}: write min:max:points, e.g. -1:1:51") from None
        if len(parts) != 3 or n < 1 or (n > 1 and hi <= lo):
            raise UserError(f"grid {spec!r}: need min < max and points >= 1, e.g. -1:1:51")
        return np.linspace(lo, hi, n)
    values = np.asarray(list(spec), dtype=float)
    if values.ndim != 1 or len(values) == 0:
        raise UserError(f"grid {spec!r}: give min:max:points or a list of numbers")
    return values


def _entries(model: nn.Module, dir_type: str) -> dict[str, torch.Tensor]:
    if dir_type == "weights":
        return {n: p for n, p in model.named_parameters()}
    if dir_type == "states":
        return dict(model.state_dict())
    raise UserError(f"dir_type={dir_type!r}: use 'weights' or 'states'")


def random_direction(
    model: nn.Module,
    norm: str | None = "filter",
    ignore: str | None = "biasbn",
    seed: int | None = None,
    dir_type: str = "weights",
) -> Direction:
    """A Gaussian direction, normalized like the weights (``filter``, ``layer`` or ``None``)."""
    if norm not in ("filter", "layer", None):
        raise UserError(f"norm={norm!r}: use 'filter', 'layer' or None")
    if ignore not in ("biasbn", None):
        raise UserError(f"ignore={ignore!r}: use 'biasbn' or None")
    gen = torch.Generator()
    gen.manual_seed(seed if seed is not None else int(torch.randint(2**31, ()).item()))
    direction: Direction = {}
    for name, w in _entries(model, dir_type).items():
        w = w.detach()
        if not w.is_floating_point():  # BatchNorm's num_batches_tracked
            direction[name] = torch.zeros_like(w)
            continue
        d = torch.randn(w.shape, generator=gen, dtype=torch.float64).to(w)
        if w.dim() <= 1:
            d = torch.zeros_like(w) if ignore == "biasbn" else w.clone()
        elif norm == "filter":
            d_norm = d.flatten(1).norm(dim=1).clamp_min(1e-10)
            d = d * (w.flatten(1).norm(dim=1) / d_norm).view(-1, *[1] * (w.dim() - 1))
        elif norm == "layer":
            d = d * (w.norm() / d.norm().clamp_min(1e-10))
        direction[name] = d
    return direction


def direction_between(state_a: dict[str, torch.Tensor], state_b: dict[str, Any]) -> Direction:
    """``b - a`` for every floating state entry (the line between two checkpoints)."""
    missing = sorted(set(state_a) ^ set(state_b))
    if missing:
        raise UserError(f"the two checkpoints differ in their keys, e.g. {missing[:3]}")
    return {
        k: (state_b[k] - v) if v.is_floating_point() else torch.zeros_like(v)
        for k, v in state_a.items()
    }


@contextmanager
def perturbed(model: nn.Module, directions: Sequence[Direction]):
    """Yield ``set_point(coords)`` that moves the model to ``θ + Σ cᵢ dᵢ``; restores θ after."""
    state = model.state_dict(keep_vars=True)
    keys = sorted(set().union(*(d.keys() for d in directions)))
    unknown = [k for k in keys if k not in state]
    if unknown:
        raise UserError(f"direction entries not in the model: {unknown[:3]}")
    base = {k: state[k].detach().clone() for k in keys}

    @torch.no_grad()
    def set_point(coords: Sequence[float]) -> None:
        for k in keys:
            if not base[k].is_floating_point():
                continue
            value = base[k].clone()
            for c, d in zip(coords, directions, strict=True):
                if k in d:
                    value.add_(d[k].to(value), alpha=float(c))
            state[k].data.copy_(value)

    try:
        yield set_point
    finally:
        with torch.no_grad():
            for k in keys:
                state[k].data.copy_(base[k])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> tuple[float, float]:
    """Mean loss and top-1 accuracy over ``batches``, the model in eval mode (mode restored)."""
    loss_sum, correct, n = 0.0, 0, 0
    with eval_mode(model):
        for x, y in batches:
            logits = model(x)
            loss_sum += float(criterion(logits, y)) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
    if n == 0:
        raise UserError("no images to evaluate the landscape on")
    return loss_sum / n, correct / n


def _load_or_new(path: Path | None, coords: list[np.ndarray], meta: dict) -> dict[str, np.ndarray]:
    shape = tuple(len(c) for c in coords)
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as saved:
            old_meta = json.loads(str(saved["meta"]))
            same_grid = len(coords) == int(saved["dim"]) and all(
                np.array_equal(c, saved[f"axis{i}"]) for i, c in enumerate(coords)
            )
            if not same_grid or old_meta != meta:
                raise UserError(
                    f"{path} holds a surface with other settings ({old_meta}); "
                    "use another output_dir or delete the file"
                )
            return {"loss": saved["loss"].copy(), "acc": saved["acc"].copy()}
    return {"loss": np.full(shape, np.nan), "acc": np.full(shape, np.nan)}


def _save(path: Path, coords: list[np.ndarray], values: dict[str, np.ndarray], meta: dict) -> None:
    buffer = io.BytesIO()
    axes = {f"axis{i}": c for i, c in enumerate(coords)}
    np.savez(buffer, dim=len(coords), meta=json.dumps(meta, sort_keys=True), **axes, **values)
    atomic_write_bytes(path, buffer.getvalue())


def surface(
    model: nn.Module,
    batches: Batches,
    directions: Sequence[Direction],
    coords: Sequence[np.ndarray],
    path: str | Path | None = None,
    meta: dict | None = None,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    save_every: int = 10,
    max_new_points: int | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Loss and accuracy on the grid ``coords`` (one axis per direction), resumable from ``path``.

    Points whose loss is already in ``path`` are skipped. ``max_new_points`` stops after that
    many evaluations (the file then holds a partial surface that a rerun completes).
    """
    if len(directions) != len(coords) or len(coords) not in (1, 2):
        raise UserError("give one grid axis per direction, with one or two directions")
    coords = [np.asarray(c, dtype=float) for c in coords]
    meta = dict(meta or {})
    path = Path(path) if path is not None else None
    values = _load_or_new(path, coords, meta)
    todo = [idx for idx in np.ndindex(values["loss"].shape) if np.isnan(values["loss"][idx])]
    if max_new_points is not None:
        todo = todo[:max_new_points]
    start, done = time.perf_counter(), 0
    with perturbed(model, directions) as set_point:
        for idx in todo:
            set_point([c[i] for c, i in zip(coords, idx, strict=True)])
            values["loss"][idx], values["acc"][idx] = evaluate(model, batches, criterion)
            done += 1
            if path is not None and (done % save_every == 0 or done == len(todo)):
                _save(path, coords, values, meta)
            if progress:
                rate = done / (time.perf_counter() - start)
                print(
                    f"\rlandscape {done}/{len(todo)} points, {rate:.2f} points/s",
                    end="" if done < len(todo) else "\n",
                    file=sys.stderr,
                    flush=True,
                )
    if path is not None and not todo:
        _save(path, coords, values, meta)
    return {**{f"axis{i}": c for i, c in enumerate(coords)}, **values}


def plot(
    result: dict[str, np.ndarray], out_dir: Path, log_scale: bool = False, title: str = ""
) -> list[Path]:
    """1D curve, or contour, filled contour and 3D surface PNGs of ``surface``'s result."""
    plt = pyplot()

    loss = np.log(result["loss"]) if log_scale else result["loss"]
    label = "log(train loss)" if log_scale else "train loss"
    figures: dict[str, Any] = {}
    if "axis1" not in result:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(result["axis0"], loss, "b-", label=label)
        ax.set(xlabel="α", ylabel=label)
        acc_ax = ax.twinx()
        acc_ax.plot(result["axis0"], 100 * result["acc"], "r--", label="accuracy")
        acc_ax.set_ylabel("train accuracy (%)", color="r")
        figures["landscape_1d.png"] = fig
    else:
        x, y = np.meshgrid(result["axis0"], result["axis1"], indexing="ij")
        levels = np.linspace(np.nanmin(loss), np.nanmax(loss), 30)
        for name, fill in (("landscape_contour.png", False), ("landscape_contourf.png", True)):
            fig, ax = plt.subplots(figsize=(4.5, 4))
            drawn = (ax.contourf if fill else ax.contour)(x, y, loss, levels=levels, cmap="viridis")
            if not fill:
                ax.clabel(drawn, inline=True, fontsize=6)
            fig.colorbar(drawn, ax=ax, label=label)
            ax.set(xlabel="δ", ylabel="η", aspect="equal")
            figures[name] = fig
        fig = plt.figure(figsize=(5, 4))
        ax3 = fig.add_subplot(projection="3d")
        ax3.plot_surface(x, y, loss, cmap="viridis", linewidth=0)
        ax3.set(xlabel="δ", ylabel="η", zlabel=label)
        figures["landscape_3d.png"] = fig
    for fig in figures.values():
        fig.suptitle(title, fontsize=8)
    return [atomic_write_figure(out_dir / name, fig) for name, fig in figures.items()]


def fixed_batches(dm, num_images: int, batch_size: int = 500, split: str = "train") -> list:
    """The first ``num_images`` images of a zoo data module's split, normalized, no augmentation."""
    x, y = getattr(dm, f"{split}_x"), getattr(dm, f"{split}_y")
    n = min(int(num_images), len(y))
    if n <= 0:
        raise UserError(f"task.num_images={num_images}: need at least one image")
    loader = dm._loader(x[:n], y[:n], train=False)
    loader.batch_size = batch_size
    return list(loader)


def plot_spread(surfaces: Sequence[np.ndarray], coords: np.ndarray, seeds: list, path: Path):
    """Mean ± standard deviation over repeated random directions: a band (1D) or the standard
    deviation as a filled contour (2D)."""
    plt = pyplot()

    stack = np.stack(surfaces)
    mean, std = stack.mean(0), stack.std(0, ddof=1)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    if stack.ndim == 2:
        ax.plot(coords, mean, "b-")
        ax.fill_between(coords, mean - std, mean + std, alpha=0.3)
        ax.set(xlabel="α", ylabel="train loss (mean ± s.d.)")
    else:
        x, y = np.meshgrid(coords, coords, indexing="ij")
        drawn = ax.contourf(x, y, std, levels=30, cmap="magma")
        fig.colorbar(drawn, ax=ax, label="s.d. of the train loss")
        ax.set(xlabel="δ", ylabel="η", aspect="equal")
    ax.set_title(f"{len(surfaces)} direction draws, seeds {seeds}", fontsize=8)
    return atomic_write_figure(path, fig)
