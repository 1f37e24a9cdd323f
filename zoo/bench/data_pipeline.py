"""One Fashion-MNIST training epoch of LeNet-5: the zoo's in-memory batched pipeline against
torchvision's ``FashionMNIST`` + ``DataLoader`` with the same augmentation done per sample.

``python -m zoo.bench.data_pipeline [--out FILE] [--threads 2]``. Both pipelines use batch 128,
shuffling, random crop with 2 px zero padding and horizontal flips, normalization with the
training mean/std, and feed the same LeNet-5 training step (SGD, momentum 0.9); the reference is
timed with ``num_workers`` 0 and 2 and the faster one is the baseline. The torchvision dataset
reads decompressed copies of the same IDX files in a temporary directory. Also reported: the
loaders alone (no model).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

import zoo
from zoo.data import FashionMNISTDataModule
from zoo.io import atomic_write_json
from zoo.training.runtime import ALLOCATOR_POLICIES, configure_allocator

BATCH = 128


def _epoch(batches: Iterable, model: torch.nn.Module | None) -> tuple[float, int]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if model else None
    start, n = time.perf_counter(), 0
    for x, y in batches:
        n += len(y)
        if model is not None and optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    return time.perf_counter() - start, n


def _torchvision_loader(root: Path, mean: float, std: float, workers: int):
    import torchvision
    from torchvision import transforms as T

    transform = T.Compose(
        [
            T.RandomCrop(28, padding=2),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    dataset = torchvision.datasets.FashionMNIST(str(root), train=True, transform=transform)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=False,
    )


def _stage_raw_files(source: Path, root: Path) -> None:
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in source.glob("*-ubyte.gz"):
        with gzip.open(gz) as src, open(raw / gz.name[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)


def run(threads: int) -> dict:
    torch.set_num_threads(threads)
    dm = FashionMNISTDataModule(batch_size=BATCH, val_size=0, crop_padding=2, hflip=True)
    dm.setup("fit")
    ours = dm.train_dataloader()
    mean, std = float(dm.mean[0]), float(dm.std[0])
    results: dict = {"threads": threads, "batch": BATCH, "images": len(dm.train_y)}
    torch.manual_seed(0)
    model = zoo.create_model("lenet5", in_chans=1, num_classes=10)
    _epoch(ours, model)  # warm-up: allocator, oneDNN primitives
    results["zoo_epoch_s"], _ = _epoch(ours, model)
    results["zoo_loader_only_s"], _ = _epoch(ours, None)
    source = next(d for d in dm._search_dirs() if (d / "train-images-idx3-ubyte.gz").is_file())
    with tempfile.TemporaryDirectory() as tmp:
        _stage_raw_files(source, Path(tmp))
        for workers in (0, 2):
            loader = _torchvision_loader(Path(tmp), mean, std, workers)
            results[f"torchvision_w{workers}_epoch_s"], _ = _epoch(loader, model)
            results[f"torchvision_w{workers}_loader_only_s"], _ = _epoch(loader, None)
    best = min(results["torchvision_w0_epoch_s"], results["torchvision_w2_epoch_s"])
    results["speedup_epoch"] = best / results["zoo_epoch_s"]
    best_loader = min(
        results["torchvision_w0_loader_only_s"], results["torchvision_w2_loader_only_s"]
    )
    results["speedup_loader_only"] = best_loader / results["zoo_loader_only_s"]
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--allocator", choices=ALLOCATOR_POLICIES, default="retain")
    args = parser.parse_args(argv)
    configure_allocator(args.allocator)
    results = run(args.threads)
    results["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    print(json.dumps(results, indent=2))
    if args.out:
        atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
