"""Data for density models: 2-D toy densities and images as raw pixel counts.

The toy densities follow FFJORD's ``lib/toy_data.py`` (Grathwohl et al., ICLR 2019), generated here
with torch from a seeded generator (no scikit-learn): ``moons`` (scikit-learn's two half circles,
noise 0.1, ×2, shifted by (−1, −0.2)), ``circles`` (two concentric circles, inner radius factor 0.5,
noise 0.08, ×3; torchdiffeq's ``examples/cnf.py`` uses factor 0.001, noise 0.06, scale 1),
``8gaussians`` (σ = 0.5 around 8 points on a circle of radius 4, all divided by 1.414) and
``pinwheel`` (5 arms, radial σ 0.3, tangential σ 0.1, rate 0.25, ×2). The label of a point is its
mixture component (arm, circle, moon). As in both references every training step draws a fresh
batch: an "epoch" is ``batches_per_epoch`` steps, and the batches of epoch e depend only on
(seed, e). Validation and test sets are fixed draws of their own seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from zoo.data.datamodules import FashionMNISTDataModule, MNISTDataModule
from zoo.data.loader import InMemoryLoader, ResumableEpochs
from zoo.errors import UserError

Points = tuple[torch.Tensor, torch.Tensor]


def _angles(n: int, gen: torch.Generator, high: float) -> torch.Tensor:
    return torch.rand(n, generator=gen) * high


def moons(n: int, gen: torch.Generator, noise: float = 0.1) -> Points:
    """Two interleaved half circles (scikit-learn's ``make_moons``), ×2 and centred as FFJORD's."""
    label = torch.randint(0, 2, (n,), generator=gen)
    theta = _angles(n, gen, math.pi)
    outer = torch.stack([theta.cos(), theta.sin()], 1)
    inner = torch.stack([1 - theta.cos(), 0.5 - theta.sin()], 1)
    x = torch.where(label[:, None] == 0, outer, inner)
    x = x + noise * torch.randn(n, 2, generator=gen)
    return 2 * x + torch.tensor([-1.0, -0.2]), label


def circles(
    n: int, gen: torch.Generator, noise: float = 0.08, factor: float = 0.5, scale: float = 3.0
) -> Points:
    """Two concentric circles of radii 1 and ``factor`` (scikit-learn's ``make_circles``)."""
    label = torch.randint(0, 2, (n,), generator=gen)
    theta = _angles(n, gen, 2 * math.pi)
    radius = torch.where(label == 0, 1.0, factor)
    x = radius[:, None] * torch.stack([theta.cos(), theta.sin()], 1)
    return scale * (x + noise * torch.randn(n, 2, generator=gen)), label


def eight_gaussians(n: int, gen: torch.Generator, std: float = 0.5, radius: float = 4.0) -> Points:
    """Eight Gaussians of σ = ``std`` at the compass points of a circle, divided by 1.414."""
    label = torch.randint(0, 8, (n,), generator=gen)
    angle = label.float() * (math.pi / 4)
    centres = radius * torch.stack([angle.cos(), angle.sin()], 1)
    return (centres + std * torch.randn(n, 2, generator=gen)) / 1.414, label


def pinwheel(
    n: int,
    gen: torch.Generator,
    arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    rate: float = 0.25,
) -> Points:
    """A pinwheel: Gaussian blobs bent around the origin, ever more with distance."""
    label = torch.randint(0, arms, (n,), generator=gen)
    feat = torch.randn(n, 2, generator=gen) * torch.tensor([radial_std, tangential_std])
    feat[:, 0] += 1.0
    angle = label.float() * (2 * math.pi / arms) + rate * feat[:, 0].exp()
    cos, sin = angle.cos(), angle.sin()
    x = torch.stack([feat[:, 0] * cos - feat[:, 1] * sin, feat[:, 0] * sin + feat[:, 1] * cos], 1)
    return 2 * x, label


TOY_DATASETS: dict[str, Callable[..., Points]] = {
    "moons": moons,
    "circles": circles,
    "8gaussians": eight_gaussians,
    "pinwheel": pinwheel,
}
TOY_COMPONENTS = {"moons": 2, "circles": 2, "8gaussians": 8, "pinwheel": 5}


def _mixture_log_prob(
    x: torch.Tensor, centres: torch.Tensor, std: float, chunk: int = 1024
) -> torch.Tensor:
    """log of the equal-weight mixture of N(centre_j, std²·I) in 2-D, at every x_i."""
    out = []
    for part in x.split(chunk):
        sq = part.square().sum(1, keepdim=True) + centres.square().sum(1) - 2 * part @ centres.T
        out.append((-0.5 * sq.clamp_min(0) / std**2).logsumexp(1))
    return torch.cat(out) - math.log(2 * math.pi * std**2) - math.log(len(centres))


def toy_log_prob(
    dataset: str, x: torch.Tensor, options: dict | None = None, nodes: int = 1024
) -> torch.Tensor | None:
    """The data density's own log p(x) (float64), where it has a closed form or a 1-D integral:
    8gaussians exactly, moons and circles by quadrature over the angle with ``nodes`` points
    (spacing far below the noise); None for pinwheel. Its mean −log p on a test set is the best
    negative log-likelihood a model can reach there in expectation (the data's entropy)."""
    opts = dict(options or {})
    x = x.double()
    theta = (torch.arange(nodes, dtype=torch.float64) + 0.5) / nodes
    if dataset == "8gaussians":
        std, radius = opts.get("std", 0.5), opts.get("radius", 4.0)
        angle = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
        centres = radius * torch.stack([angle.cos(), angle.sin()], 1) / 1.414
        return _mixture_log_prob(x, centres, std / 1.414)
    if dataset == "moons":
        noise, angle = opts.get("noise", 0.1), theta * math.pi
        outer = torch.stack([angle.cos(), angle.sin()], 1)
        inner = torch.stack([1 - angle.cos(), 0.5 - angle.sin()], 1)
        curve = 2 * torch.cat([outer, inner]) + torch.tensor([-1.0, -0.2], dtype=torch.float64)
        return _mixture_log_prob(x, curve, 2 * noise)
    if dataset == "circles":
        noise, factor = opts.get("noise", 0.08), opts.get("factor", 0.5)
        scale, angle = opts.get("scale", 3.0), theta * 2 * math.pi
        ring = torch.stack([angle.cos(), angle.sin()], 1)
        return _mixture_log_prob(x, scale * torch.cat([ring, factor * ring]), scale * noise)
    return None


def toy_sample(
    dataset: str, n: int, seed: int = 0, options: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """n points (float32, n×2) of a toy density and their components, from ``seed``."""
    if dataset not in TOY_DATASETS:
        raise UserError(f"data.dataset={dataset!r}: use one of {', '.join(TOY_DATASETS)}")
    gen = torch.Generator().manual_seed(seed)
    try:
        x, label = TOY_DATASETS[dataset](n, gen, **(options or {}))
    except TypeError as err:
        raise UserError(f"data.options for {dataset}: {err}") from None
    return x.float(), label


class ToyLoader(ResumableEpochs):
    """Fresh toy batches: epoch e serves ``batches`` batches drawn from seed (seed, e)."""

    def __init__(
        self, dataset: str, batch_size: int, batches: int, seed: int, options: dict | None
    ) -> None:
        self.dataset, self.batch_size, self.batches = dataset, batch_size, batches
        self.seed, self.options = seed, options
        self.epoch, self.resume_batch, self._served = 0, 0, 0

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[Points]:
        skip, self.resume_batch, self._served = self.resume_batch, 0, 0
        x, y = toy_sample(
            self.dataset,
            self.batch_size * self.batches,
            self.seed * 100_003 + self.epoch,
            self.options,
        )
        for b in range(self.batches):
            self._served = b + 1
            if b >= skip:
                sel = slice(b * self.batch_size, (b + 1) * self.batch_size)
                yield x[sel], y[sel]


class Toy2dDataModule(pl.LightningDataModule):
    """A 2-D toy density (``dataset``): fresh training batches, fixed validation and test sets."""

    def __init__(
        self,
        dataset: str = "moons",
        batch_size: int = 512,
        batches_per_epoch: int = 100,
        eval_batch_size: int = 2000,
        num_val: int = 2000,
        num_test: int = 10_000,
        options: dict | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if dataset not in TOY_DATASETS:
            raise UserError(f"data.dataset={dataset!r}: use one of {', '.join(TOY_DATASETS)}")
        if batches_per_epoch < 1 or num_val < 1 or num_test < 1:
            raise UserError("data.batches_per_epoch, data.num_val and data.num_test must be >= 1")
        self.dataset, self.name = dataset, name or dataset
        self.batch_size, self.batches_per_epoch = batch_size, batches_per_epoch
        self.eval_batch_size = eval_batch_size
        self.num_val, self.num_test = num_val, num_test
        self.options, self.seed = dict(options or {}), seed
        self.num_classes = TOY_COMPONENTS[dataset]
        toy_sample(dataset, 1, 0, self.options)  # bad options fail here, before training
        self.val_set = toy_sample(dataset, num_val, 1_000_000 + seed, self.options)
        self.test_set = toy_sample(dataset, num_test, 2_000_000 + seed, self.options)
        self.data_nll = {split: self._data_nll(points[0]) for split, points in self._fixed_sets()}

    def _fixed_sets(self) -> tuple[tuple[str, Points], ...]:
        return (("val", self.val_set), ("test", self.test_set))

    def _data_nll(self, x: torch.Tensor) -> float | None:
        """Mean −log p of the data density itself on ``x`` (None where it is not known)."""
        log_p = toy_log_prob(self.dataset, x, self.options)
        return None if log_p is None else -float(log_p.mean())

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """n fresh points of the data density (plots)."""
        return toy_sample(self.dataset, n, 3_000_000 + seed, self.options)[0]

    def train_dataloader(self) -> ToyLoader:
        loader = ToyLoader(
            self.dataset, self.batch_size, self.batches_per_epoch, self.seed, self.options
        )
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            loader.set_epoch(trainer.current_epoch)
        return loader

    def _fixed(self, points: Points) -> DataLoader:
        return DataLoader(TensorDataset(*points), batch_size=self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._fixed(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._fixed(self.test_set)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "kind": "points",
            "shape": [2],
            "dataset": self.dataset,
            "options": self.options,
            "num_classes": self.num_classes,
            "train_per_epoch": self.batch_size * self.batches_per_epoch,
            "val": self.num_val,
            "test": self.num_test,
            # the data density's own NLL on these points: what a perfect model would score
            "val_nll_of_data_density": self.data_nll["val"],
            "test_nll_of_data_density": self.data_nll["test"],
        }


class _PixelCounts:
    """Images as raw pixel values 0…255 (no normalization), optionally at a lower resolution:
    ``resolution`` must divide 28; the 28/resolution-pixel squares are averaged and rounded, so
    the data stay 8-bit (bits per dimension are counted against 256 levels)."""

    def __init__(self, *args, resolution: int = 28, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if resolution < 1 or 28 % resolution:
            raise UserError(f"data.resolution={resolution}: use a divisor of 28 (28, 14, 7, 4)")
        self.resolution = resolution

    def _downsample(self, images: torch.Tensor) -> torch.Tensor:
        k = images.shape[-1] // self.resolution
        if k == 1:
            return images
        return F.avg_pool2d(images.float(), k).round().to(torch.uint8)

    def load(self):
        train_x, train_y, test_x, test_y = super().load()
        return self._downsample(train_x), train_y, self._downsample(test_x), test_y

    def _loader(self, x: torch.Tensor, y: torch.Tensor, train: bool) -> InMemoryLoader:
        channels = x.shape[1]
        rank, world = self._rank_info() if train else (0, 1)
        return InMemoryLoader(
            x,
            y,
            self.batch_size if train else self.eval_batch_size,
            torch.zeros(channels),
            torch.ones(channels),
            shuffle=train,
            drop_last=train,
            seed=self.seed,
            scale=1.0,
            rank=rank,
            world_size=world,
        )

    def describe(self) -> dict:
        info = super().describe()
        info.update(kind="pixels", shape=[self.in_chans, *self.image_size])
        return info


class FashionMNISTPixels(_PixelCounts, FashionMNISTDataModule):
    """Fashion-MNIST as pixel counts for density models (``resolution`` 28, 14, 7 or 4)."""


class MNISTPixels(_PixelCounts, MNISTDataModule):
    """MNIST as pixel counts for density models (``resolution`` 28, 14, 7 or 4)."""
