"""A batched in-memory loader with batched augmentation (no per-sample PIL, no worker processes).

Small datasets (MNIST-size, CIFAR-size) fit in memory as one uint8 tensor; slicing a shuffled batch
and augmenting the whole batch at once with tensor ops is several times faster on a CPU than a
``DataLoader`` running per-sample PIL transforms. The order and the augmentation of epoch ``e``
depend only on ``(seed, e)``, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class BatchAugment:
    """Random crop with zero padding, horizontal flip and random erasing, applied per batch."""

    crop_padding: int = 0
    hflip: bool = False
    random_erasing: float = 0.0  # probability per image

    @property
    def enabled(self) -> bool:
        return self.crop_padding > 0 or self.hflip or self.random_erasing > 0

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.crop_padding > 0:
            p = self.crop_padding
            padded = F.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
            rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
            cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]
            batch = torch.arange(n)[:, None, None, None]
            chans = torch.arange(x.shape[1])[None, :, None, None]
            x = padded[batch, chans, rows, cols]
        if self.hflip:
            flip = torch.rand(n, generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.random_erasing > 0:
            x = _random_erase(x, self.random_erasing, gen)
        return x


def _random_erase(x: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """Zhong et al. 2020 random erasing: a box of 2–33% of the area, aspect 0.3–3.3, set to 0."""
    n, _, h, w = x.shape
    area = torch.empty(n).uniform_(0.02, 0.33, generator=gen) * h * w
    log_ratio = torch.empty(n).uniform_(-1.2, 1.2, generator=gen)
    eh = (area * log_ratio.exp()).sqrt().clamp(1, h).long()
    ew = (area / log_ratio.exp()).sqrt().clamp(1, w).long()
    y0 = (torch.rand(n, generator=gen) * (h - eh + 1)).long()
    x0 = (torch.rand(n, generator=gen) * (w - ew + 1)).long()
    ys, xs = torch.arange(h)[None, :], torch.arange(w)[None, :]
    in_y = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])
    in_x = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])
    box = in_y[:, :, None] & in_x[:, None, :]
    apply = (torch.rand(n, generator=gen) < prob)[:, None, None]
    return x.masked_fill((box & apply)[:, None], 0.0)


class ResumableEpochs:
    """Where a loader's epoch stands, for Lightning's stateful-dataloader protocol: a mid-epoch
    checkpoint stores ``state_dict()``, and a resumed loader starts at ``resume_batch``.

    Subclasses set ``epoch``, ``resume_batch`` and ``_served`` and define ``__len__``."""

    epoch: int
    resume_batch: int
    _served: int

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        """Where the epoch stands (Lightning stores it in mid-epoch checkpoints)."""
        return {"epoch": self.epoch, "batches": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue after the last batch served: inside its epoch, or at the next epoch's start."""
        epoch, served = int(state.get("epoch", 0)), int(state.get("batches", 0))
        done = served >= len(self)
        self.epoch, self.resume_batch = (epoch + 1, 0) if done else (epoch, served)


class InMemoryLoader(ResumableEpochs):
    """Iterates ``(x, y)`` batches of an in-memory dataset, normalized (and augmented).

    ``images`` is uint8 or float ``N×C×H×W`` in [0, 255] or [0, 1] (``scale``); normalization is
    ``(x * scale - mean) / std``. With ``rank``/``world_size`` each process gets a disjoint shard
    (DDP). ``set_epoch`` picks the epoch whose shuffle and augmentation are drawn.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        *,
        shuffle: bool = False,
        augment: BatchAugment | None = None,
        drop_last: bool = False,
        seed: int = 0,
        scale: float = 1.0 / 255.0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size = batch_size
        self.mean = mean.view(1, -1, 1, 1).float()
        self.std = std.view(1, -1, 1, 1).float()
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.seed, self.scale = seed, scale
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.resume_batch = 0  # set from a mid-epoch checkpoint: the next epoch starts there
        self._served = 0  # batches of the current epoch served so far

    def _indices(self, gen: torch.Generator) -> torch.Tensor:
        n = len(self.labels)
        idx = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            per_rank = n // self.world_size
            idx = idx[self.rank * per_rank : (self.rank + 1) * per_rank]
        return idx

    def __len__(self) -> int:
        n = len(self.labels) // self.world_size
        # drop_last drops a ragged final batch, never the only one: a data set smaller than a batch
        # still trains (one smaller step per epoch) instead of silently doing nothing.
        if self.drop_last and n >= self.batch_size:
            return n // self.batch_size
        return -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        idx = self._indices(gen)
        skip, self.resume_batch, self._served = self.resume_batch, 0, 0
        for b in range(len(self)):
            sel = idx[b * self.batch_size : (b + 1) * self.batch_size]
            x = self.images[sel].float() * self.scale
            if self.augment is not None and self.augment.enabled:
                x = self.augment(x, gen)  # also for skipped batches: the same random stream
            self._served = b + 1
            if b >= skip:
                yield (x - self.mean) / self.std, self.labels[sel]
