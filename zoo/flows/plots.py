"""Figures of a trained flow: the learned 2-D density, samples moving from t0 to t1 (a PNG strip
and a GIF), image samples and their trajectories. Every grid point and sample is computed in
``chunk``-sized batches without gradients; files are written atomically."""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch
from PIL import Image

from zoo.flows.cnf import CNF, logit_inverse
from zoo.io import atomic_write_bytes, atomic_write_figure, pyplot


def plot_extent(data: torch.Tensor, margin: float = 0.15) -> float:
    """Half-width of a square view around the origin holding 99.9 % of the data per axis."""
    reach = torch.quantile(data.abs(), 0.999, dim=0).max().item()
    return round(reach * (1 + margin) + 0.25, 1)


@torch.no_grad()
def density_grid(
    flow: CNF, extent: float, points: int = 150, chunk: int = 5000
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(grid axis, p(x) on the ``points``×``points`` grid over [−extent, extent]², Σ p·cell area):
    the last is the probability mass the grid holds (1 for a normalized density that fits)."""
    axis = torch.linspace(-extent, extent, points)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    log_p = torch.cat([flow.log_prob(grid[i : i + chunk]) for i in range(0, len(grid), chunk)])
    density = log_p.exp().reshape(points, points)
    cell = (axis[1] - axis[0]).item() ** 2
    return axis, density, float(density.sum() * cell)


@torch.no_grad()
def plot_density(
    flow: CNF, data: torch.Tensor, path: str | Path, extent: float, samples: int = 20_000
) -> float:
    """Data, model samples and model density side by side (FFJORD's toy figure); returns the
    probability mass on the plotted grid."""
    plt = pyplot()
    axis, density, mass = density_grid(flow, extent)
    drawn = flow.sample(samples).cpu()
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    box = [[-extent, extent], [-extent, extent]]
    axes[0].hist2d(*data.T.numpy(), bins=150, range=box, cmap="viridis")
    axes[0].set_title(f"data ({len(data):,} points)")
    axes[1].hist2d(*drawn.T.numpy(), bins=150, range=box, cmap="viridis")
    axes[1].set_title(f"samples ({samples:,})")
    axes[2].imshow(
        density.numpy(), extent=(-extent, extent, -extent, extent), origin="lower", cmap="viridis"
    )
    axes[2].set_title(f"density (mass on grid {mass:.4f})")
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_aspect("equal")
    atomic_write_figure(path, fig)
    return mass


def _scatter_frames(trajectory: torch.Tensor, times: torch.Tensor, extent: float, axes) -> None:
    for ax, z, t in zip(axes, trajectory, times, strict=True):
        ax.scatter(*z.T.numpy(), s=1, alpha=0.3, color="tab:blue", linewidths=0)
        ax.set_xlim(-extent, extent), ax.set_ylim(-extent, extent)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_aspect("equal")
        ax.set_title(f"t = {t:.2f}")


@torch.no_grad()
def plot_flow_strip(
    flow: CNF, path: str | Path, extent: float, samples: int = 4000, steps: int = 7, seed: int = 0
) -> None:
    """Base samples at t0 carried to t1, ``steps`` snapshots in a row."""
    plt = pyplot()
    z0 = flow.base_sample(samples, torch.Generator().manual_seed(seed))
    trajectory = flow.trajectory(z0, steps).cpu()
    fig, axes = plt.subplots(1, steps, figsize=(2.2 * steps, 2.4))
    _scatter_frames(trajectory, torch.linspace(0, flow.t1, steps), extent, axes)
    atomic_write_figure(path, fig)


@torch.no_grad()
def save_flow_gif(
    flow: CNF, path: str | Path, extent: float, samples: int = 2000, frames: int = 25, seed: int = 0
) -> None:
    """The same motion as an animated GIF (there and back, 120 ms a frame)."""
    plt = pyplot()
    z0 = flow.base_sample(samples, torch.Generator().manual_seed(seed))
    trajectory = flow.trajectory(z0, frames).cpu()
    images = []
    for z, t in zip(trajectory, torch.linspace(0, flow.t1, frames), strict=True):
        fig, ax = plt.subplots(figsize=(3.2, 3.4))
        _scatter_frames(z[None], t[None], extent, [ax])
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        plt.close(fig)
        images.append(Image.open(buffer).convert("P", palette=Image.Palette.ADAPTIVE))
    images += images[-2:0:-1]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=120, loop=0)
    atomic_write_bytes(path, out.getvalue())


def _image_grid(images: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """rows×cols tiles of (n, c, h, w) images in [0, 1] as one (h·rows)×(w·cols) array (c = 1)."""
    _, _, h, w = images.shape
    tiles = images[: rows * cols, 0].reshape(rows, cols, h, w)
    return tiles.permute(0, 2, 1, 3).reshape(rows * h, cols * w)


@torch.no_grad()
def plot_image_samples(
    flow: CNF, path: str | Path, alpha: float, count: int = 64, seed: int = 0
) -> None:
    """A square grid of samples, mapped back from logit space to pixels."""
    plt = pyplot()
    side = int(math.sqrt(count))
    y = flow.sample(side * side, torch.Generator().manual_seed(seed)).cpu()
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(_image_grid(logit_inverse(y, alpha), side, side).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    atomic_write_figure(path, fig)


@torch.no_grad()
def plot_image_strip(
    flow: CNF, path: str | Path, alpha: float, samples: int = 8, steps: int = 7, seed: int = 1
) -> None:
    """Each row one sample, each column a time from t0 (base noise) to t1 (the image)."""
    plt = pyplot()
    z0 = flow.base_sample(samples, torch.Generator().manual_seed(seed))
    trajectory = flow.trajectory(z0, steps).cpu()  # (steps, samples, c, h, w)
    frames = logit_inverse(trajectory.transpose(0, 1).reshape(-1, *flow.shape), alpha)
    fig, ax = plt.subplots(figsize=(1.2 * steps, 1.2 * samples))
    ax.imshow(_image_grid(frames, samples, steps).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([(i + 0.5) * flow.shape[-1] for i in range(steps)])
    ax.set_xticklabels([f"t={t:.2f}" for t in torch.linspace(0, flow.t1, steps).tolist()])
    ax.set_yticks([])
    atomic_write_figure(path, fig)
