"""The datamodules on small files the tests write: IDX (.gz and raw), CIFAR pickles, ImageFolder,
the seeded split, training-split statistics, batched augmentation and missing-data errors."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose, needs_fmnist
from hydra.utils import instantiate

from zoo.data import (
    BatchAugment,
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    InMemoryLoader,
    MNISTDataModule,
    SyntheticDataModule,
)
from zoo.data.datamodules import load_cifar_batch
from zoo.errors import UserError


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dataset(folder: Path, n_train: int, n_test: int, gz: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, (n_train,)),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, (n_test,)),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        data = _idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_from_root_split_and_train_statistics(tmp_path: Path, gz: bool) -> None:
    arrays = write_idx_dataset(tmp_path, 40, 12, gz)
    dm = FashionMNISTDataModule(root=str(tmp_path), val_size=10, seed=3, batch_size=8)
    dm.setup()
    assert (dm.name, dm.num_classes, dm.in_chans, dm.image_size) == (
        "fashion_mnist",
        10,
        1,
        (28, 28),
    )
    info = dm.describe()
    assert (info["train"], info["val"], info["test"]) == (30, 10, 12)
    # The split is a partition of the training file: no image in both, none lost.
    train_rows = {bytes(r) for r in dm.train_x.flatten(1).numpy()}
    val_rows = {bytes(r) for r in dm.val_x.flatten(1).numpy()}
    all_rows = {
        bytes(r) for r in arrays["train-images-idx3-ubyte"].astype(np.uint8).reshape(40, -1)
    }
    assert not train_rows & val_rows and train_rows | val_rows == all_rows
    assert torch.equal(dm.test_x[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).byte())
    # Normalisation statistics come from the training images that remain after the split.
    pixels = dm.train_x.double() / 255
    assert dm.mean[0].item() == pytest.approx(pixels.mean().item(), abs=1e-5)
    assert dm.std[0].item() == pytest.approx(pixels.std().item(), abs=1e-5)
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (8, 1, 28, 28)
    assert len(list(dm.test_dataloader())) == 1  # eval batches are not dropped


def test_split_is_seeded(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, 50, 5, gz=True)

    def val_images(seed: int) -> torch.Tensor:
        dm = MNISTDataModule(root=str(tmp_path), val_size=10, seed=seed)
        dm.setup()
        return dm.val_x

    assert torch.equal(val_images(1), val_images(1))
    assert not torch.equal(val_images(1), val_images(2))


def test_idx_in_torchvision_layout_and_train_subset(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path / "MNIST" / "raw", 30, 6, gz=False)
    dm = MNISTDataModule(root=str(tmp_path), val_size=5, train_subset=7)
    dm.setup()
    assert dm.describe()["train"] == 7 and dm.describe()["val"] == 5


def test_truncated_idx_is_a_user_error(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, 10, 4, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="truncated"):
        MNISTDataModule(root=str(tmp_path), val_size=2).setup()


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data,  # raw IDX bytes under a .gz name
        lambda data: gzip.compress(data)[:-50],  # a download cut short
        lambda data: gzip.compress(data[:10]),  # an intact gzip of a header cut short
        lambda data: gzip.compress(data)[:20] + b"\0" * 200,  # a damaged deflate stream
    ],
    ids=["not-gzip", "truncated-gzip", "truncated-header", "corrupt-stream"],
)
def test_damaged_idx_file_is_a_user_error_naming_it(tmp_path: Path, damage) -> None:
    arrays = write_idx_dataset(tmp_path, 10, 4, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(damage(_idx_bytes(arrays["t10k-images-idx3-ubyte"])))
    with pytest.raises(UserError, match=str(path)) as err:
        MNISTDataModule(root=str(tmp_path), val_size=2).setup()
    assert "\n" not in str(err.value)


def test_train_and_test_images_of_different_sizes_are_refused(tmp_path: Path) -> None:
    """32x32 training and 28x28 test images: the model would be scored at a size it never saw."""
    write_idx_dataset(tmp_path, 10, 4, gz=False)
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(images))
    with pytest.raises(UserError, match=r"training 1x32x32, test 1x28x28") as err:
        FashionMNISTDataModule(root=str(tmp_path), val_size=2).setup()
    assert "\n" not in str(err.value)


def test_idx_labels_must_match_the_images(tmp_path: Path) -> None:
    write_idx_dataset(tmp_path, 10, 4, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(_idx_bytes(np.full(9, 3)))  # one label short
    with pytest.raises(UserError, match="expected N images and N labels"):
        MNISTDataModule(root=str(tmp_path), val_size=2).setup()
    labels.write_bytes(_idx_bytes(np.full(10, 12)))  # class 12 of 10
    with pytest.raises(UserError, match="labels run from 12 to 12 but the data has 10 classes"):
        MNISTDataModule(root=str(tmp_path), val_size=2).setup()


def test_idx_root_is_used_or_fails_never_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_idx_dataset(tmp_path / "debian", 10, 4, gz=True)
    monkeypatch.setattr(FashionMNISTDataModule, "default_dirs", (tmp_path / "debian",))
    FashionMNISTDataModule(val_size=2).setup()  # no root: the system copy
    with pytest.raises(UserError) as err:
        FashionMNISTDataModule(root=str(tmp_path / "mine"), val_size=2).setup()
    message = str(err.value)
    assert f"data.root={tmp_path / 'mine'}" in message and "download" in message
    assert str(tmp_path / "debian") not in message and "\n" not in message
    write_idx_dataset(tmp_path / "mine", 12, 4, gz=False, seed=1)
    mine = FashionMNISTDataModule(root=str(tmp_path / "mine"), val_size=2)
    mine.setup()
    assert mine.describe()["train"] == 10  # 12 - 2: the user's files, not the system's 10 - 2


def test_missing_idx_names_where_it_looked_and_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FashionMNISTDataModule, "default_dirs", (tmp_path / "debian",))
    with pytest.raises(UserError) as err:
        FashionMNISTDataModule().setup()
    message = str(err.value)
    for text in (str(tmp_path / "debian"), "apt-get install", "data.root", "download"):
        assert text in message
    assert "\n" not in message


def _write_cifar(folder: Path, files: dict[str, int], label_key: str, classes: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in files.items():
        batch = {
            b"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
            label_key.encode(): [int(v) for v in rng.integers(0, classes, n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar10_and_cifar100_python_batches(tmp_path: Path) -> None:
    files10 = {f"data_batch_{i}": 6 for i in range(1, 6)} | {"test_batch": 4}
    _write_cifar(tmp_path / "cifar-10-batches-py", files10, "labels", 10)
    _write_cifar(tmp_path / "cifar-100-python", {"train": 20, "test": 5}, "fine_labels", 100)
    names = [f"class{i}".encode() for i in range(10)]
    with open(tmp_path / "cifar-10-batches-py" / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f)
    c10 = CIFAR10DataModule(root=str(tmp_path), val_size=5, crop_padding=4, hflip=True)
    c10.setup()
    assert (c10.in_chans, c10.image_size, c10.num_classes) == (3, (32, 32), 10)
    assert c10.classes == [n.decode() for n in names]  # from the meta file
    assert c10.describe()["train"] == 25 and c10.describe()["test"] == 4
    raw = load_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch")["data"]
    assert torch.equal(c10.test_x, torch.from_numpy(raw.reshape(-1, 3, 32, 32)))
    c100 = CIFAR100DataModule(root=str(tmp_path), val_size=0.2)
    c100.setup()
    assert c100.num_classes == 100 and c100.describe()["val"] == 4
    assert c100.classes == []  # no meta file: figures fall back to label numbers
    batches = list(c10.train_dataloader())  # batch 128 > 25 images: one smaller batch, not none
    assert len(batches) == 1 and batches[0][0].shape == (25, 3, 32, 32)
    c10.batch_size = 8
    assert [len(y) for _, y in c10.train_dataloader()] == [8, 8, 8]  # ragged last batch dropped


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(UserError, match="refusing to load"):
        load_cifar_batch(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("file", "damage"),
    [
        ("data_batch_3", lambda data: data[: len(data) // 2]),  # a copy cut short
        ("test_batch", lambda data: b"<html>Not Found</html>"),  # an error page saved instead
        ("data_batch_1", lambda data: pickle.dumps({b"labels": [1, 2]})),  # no images
        ("data_batch_2", lambda data: pickle.dumps({b"data": b"\0" * 3072, b"labels": [1, 2]})),
    ],
    ids=["truncated", "text", "no-data", "count-mismatch"],
)
def test_damaged_cifar_batch_is_a_user_error_naming_it(tmp_path: Path, file: str, damage) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(
        folder, {f"data_batch_{i}": 4 for i in range(1, 6)} | {"test_batch": 4}, "labels", 10
    )
    (folder / file).write_bytes(damage((folder / file).read_bytes()))
    with pytest.raises(UserError, match=str(folder / file)) as err:
        CIFAR10DataModule(root=str(tmp_path), val_size=2).setup()
    assert "\n" not in str(err.value)


def test_imagefolder_tree(tmp_path: Path) -> None:
    from PIL import Image

    for split, n in (("train", 5), ("test", 2)):
        for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30), colour).save(tmp_path / split / cls / f"{i}.png")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=16, val_size=2)
    dm.setup()
    assert (dm.num_classes, dm.in_chans, dm.image_size) == (2, 3, (16, 16))
    assert dm.describe()["train"] == 8 and dm.describe()["test"] == 4
    # Class order is the sorted folder names: cat=0 is red, dog=1 is blue.
    red = dm.test_x[:, 0].float().mean(dim=(1, 2))
    assert torch.equal((red < 128).long(), dm.test_y)
    grey = ImageFolderDataModule(root=str(tmp_path), image_size=16, grayscale=True, val_size=2)
    grey.setup()
    assert grey.in_chans == 1
    with pytest.raises(UserError, match="train/ and test/"):
        ImageFolderDataModule(root=str(tmp_path / "train")).setup()


def _image_tree(root: Path, classes: dict[str, dict[str, int]]) -> None:
    from PIL import Image

    for split, counts in classes.items():
        for cls, n in counts.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (12, 12), (40 * i, 0, 0)).save(root / split / cls / f"{i}.png")


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # a copy cut short
        lambda data: b"not an image at all",
        lambda data: data[:16] + bytes(len(data) - 16),  # header kept, chunks zeroed
    ],
    ids=["truncated", "text", "corrupt"],
)
def test_damaged_image_is_a_user_error_naming_it(tmp_path: Path, damage) -> None:
    _image_tree(tmp_path, {"train": {"a": 3, "b": 3}, "test": {"a": 1, "b": 1}})
    bad = tmp_path / "train" / "b" / "1.png"
    bad.write_bytes(damage(bad.read_bytes()))
    with pytest.raises(UserError, match=str(bad)) as err:
        ImageFolderDataModule(root=str(tmp_path), image_size=8, val_size=1).setup()
    assert "\n" not in str(err.value)


def test_imagefolder_classes_come_from_train_and_each_has_images(tmp_path: Path) -> None:
    """An empty training class or a class only in test/ is an error, not a silent 0 %% class."""
    _image_tree(tmp_path, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    (tmp_path / "train" / "c").mkdir()
    with pytest.raises(UserError, match=f"{tmp_path / 'train' / 'c'} has no images"):
        ImageFolderDataModule(root=str(tmp_path), image_size=8, val_size=1).setup()
    (tmp_path / "train" / "c").rmdir()
    (tmp_path / "test" / "d").mkdir()
    with pytest.raises(UserError, match="has class folder.s. d that .*train lacks"):
        ImageFolderDataModule(root=str(tmp_path), image_size=8, val_size=1).setup()
    (tmp_path / "test" / "d").rmdir()
    (tmp_path / "train" / "b").rename(tmp_path / "b")  # one class: nothing to classify
    with pytest.raises(UserError, match="has 1 class folder.s.; a classifier needs at least 2"):
        ImageFolderDataModule(root=str(tmp_path), image_size=8, val_size=1).setup()
    (tmp_path / "b").rename(tmp_path / "train" / "b")
    dm = ImageFolderDataModule(root=str(tmp_path), image_size=8, val_size=1)
    dm.setup()
    assert dm.classes == ["a", "b"] and dm.describe()["test"] == 2


def _loader(x: torch.Tensor, augment: BatchAugment, **kwargs) -> InMemoryLoader:
    y = torch.arange(len(x))
    zero, one = torch.zeros(x.shape[1]), torch.ones(x.shape[1])
    return InMemoryLoader(x, y, 4, zero, one, augment=augment, scale=1.0, **kwargs)


def test_epoch_batches_depend_only_on_seed_and_epoch() -> None:
    x = torch.rand(16, 1, 8, 8)
    aug = BatchAugment(crop_padding=2, hflip=True, random_erasing=0.5)

    def epoch(e: int, seed: int = 0) -> list[torch.Tensor]:
        loader = _loader(x, aug, shuffle=True, seed=seed)
        loader.set_epoch(e)
        return [torch.cat([b, y.float().view(-1, 1, 1, 1).expand_as(b)]) for b, y in loader]

    torch.manual_seed(123)  # the global RNG must not matter
    first = epoch(3)
    torch.manual_seed(456)
    assert all(torch.equal(a, b) for a, b in zip(first, epoch(3), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, epoch(4), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, epoch(3, seed=1), strict=True))


def test_random_crop_is_a_padded_window_and_flip_mirrors() -> None:
    x = torch.rand(32, 2, 6, 6) + 1  # no zeros, so padding is visible
    gen = torch.Generator().manual_seed(0)
    crops = BatchAugment(crop_padding=2)(x, gen)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for img, crop in zip(padded, crops, strict=True):
        windows = [img[:, i : i + 6, j : j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(crop, w) for w in windows)
    assert not torch.equal(crops, x)  # 1 in 25 chance per image of the identity window
    flips = BatchAugment(hflip=True)(x, gen)
    same = (flips == x).flatten(1).all(1)
    mirrored = (flips == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_random_erasing_zeroes_one_box() -> None:
    x = torch.ones(64, 1, 16, 16)
    erased = BatchAugment(random_erasing=1.0)(x, torch.Generator().manual_seed(0))
    area = (erased == 0).flatten(1).sum(1).float() / 256
    assert ((area > 0) & (area <= 0.34)).all()
    for img in erased[:, 0]:
        rows, cols = torch.nonzero(img == 0, as_tuple=True)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert box == len(rows)  # the zeros form one rectangle
    untouched = BatchAugment(random_erasing=0.0)(x, torch.Generator().manual_seed(0))
    assert torch.equal(untouched, x)


def test_ddp_shards_are_disjoint() -> None:
    x = torch.rand(20, 1, 4, 4)
    seen = []
    for rank in range(2):
        loader = _loader(x, BatchAugment(), shuffle=True, rank=rank, world_size=2, drop_last=True)
        seen.append(torch.cat([y for _, y in loader]))
    assert len(seen[0]) == len(seen[1]) == 8
    assert not set(seen[0].tolist()) & set(seen[1].tolist())


def test_synthetic_data_is_learnable_and_configurable() -> None:
    cfg = compose(
        [
            "data=synthetic",
            "data.image_size=20",
            "data.in_chans=2",
            "data.num_classes=4",
            "data.num_samples=400",
        ],
        "train",
    )
    dm = instantiate(cfg.data)
    assert isinstance(dm, SyntheticDataModule)
    dm.setup()
    assert (dm.num_classes, dm.in_chans, dm.image_size) == (4, 2, (20, 20))
    # Nearest class mean on raw pixels separates the classes well: the labels carry signal.
    protos = torch.stack([dm.train_x[dm.train_y == c].float().mean(0) for c in range(4)])
    dist = torch.cdist(dm.test_x.float().flatten(1), protos.flatten(1))
    assert (dist.argmin(1) == dm.test_y).float().mean() > 0.8


@needs_fmnist
def test_default_fashion_mnist_config() -> None:
    cfg = compose([], "train")
    dm = instantiate(cfg.data)
    dm.setup()
    info = dm.describe()
    assert (info["train"], info["val"], info["test"]) == (55_000, 5_000, 10_000)
    assert info["mean"][0] == pytest.approx(0.286, abs=0.002)  # the known Fashion-MNIST mean
    assert info["std"][0] == pytest.approx(0.353, abs=0.002)
