"""LightningDataModules: Fashion-MNIST, MNIST, CIFAR-10/100, ImageFolder and synthetic data.

All of them hold the whole dataset in memory as uint8 tensors and serve batches through
``InMemoryLoader``. The validation split is carved from the training set with a seeded permutation
(the test set is never used for model selection) and the normalization statistics come from the
remaining training images only.
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torchvision
from PIL import Image

from zoo.data.loader import BatchAugment, InMemoryLoader
from zoo.errors import UserError

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


class InMemoryDataModule(pl.LightningDataModule):
    """Base class: subclasses implement ``load() -> (train_x, train_y, test_x, test_y)``.

    Images are uint8 ``N×C×H×W``; labels int64.
    """

    name = "in_memory"
    num_classes = 0
    classes: Sequence[str] = ()  # class names in label order; empty where the data has none

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        val_size: int | float = 5000,
        seed: int = 0,
        crop_padding: int = 0,
        hflip: bool = False,
        random_erasing: float = 0.0,
        train_subset: int | None = None,
        download: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if name:
            self.name = name
        self.root = root
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.seed = val_size, seed
        self.augment = BatchAugment(crop_padding, hflip, random_erasing)
        self.train_subset = train_subset
        self.download = download
        self._loaded = False
        self.train_loader: InMemoryLoader | None = None

    # --- to implement -----------------------------------------------------------------------
    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    # --- shape information (valid after setup) --------------------------------------------------
    @property
    def in_chans(self) -> int:
        self._ensure_loaded()
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        self._ensure_loaded()
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self.fixed_val: tuple[torch.Tensor, torch.Tensor] | None = None
        train_x, train_y, test_x, test_y = self.load()  # may set self.fixed_val
        self._check_labels(train_y, test_y)
        self._check_image_shapes(train_x, test_x)
        if self.fixed_val is not None:
            train_idx = torch.arange(len(train_y))
            self.val_x, self.val_y = self.fixed_val
        else:
            n = len(train_y)
            n_val = (
                int(self.val_size * n) if isinstance(self.val_size, float) else int(self.val_size)
            )
            if not 0 <= n_val < n:
                raise UserError(f"data.val_size={self.val_size} leaves no training images (n={n})")
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
            val_idx, train_idx = perm[:n_val], perm[n_val:]
            self.val_x, self.val_y = train_x[val_idx], train_y[val_idx]
        if self.train_subset:
            train_idx = train_idx[: int(self.train_subset)]
        self.train_x, self.train_y = train_x[train_idx], train_y[train_idx]
        self.test_x, self.test_y = test_x, test_y
        pixels = self.train_x.float().div_(255).transpose(0, 1).reshape(self.train_x.shape[1], -1)
        self.mean = pixels.mean(dim=1)
        self.std = pixels.std(dim=1).clamp_min(1e-6)
        self._loaded = True

    def _check_labels(self, *labels: torch.Tensor) -> None:
        for y in (*labels, *(self.fixed_val[1:] if self.fixed_val is not None else ())):
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise UserError(
                    f"{self.name}: labels run from {int(y.min())} to {int(y.max())} but the data "
                    f"has {self.num_classes} classes (0..{self.num_classes - 1}); check data.root"
                )

    def _check_image_shapes(self, train_x: torch.Tensor, test_x: torch.Tensor) -> None:
        """Every split holds images of one shape: a model is tested and validated at the size and
        channel count it was trained at (``describe()`` reports that one shape)."""
        splits = {"training": train_x, "test": test_x}
        if self.fixed_val is not None:
            splits["validation"] = self.fixed_val[0]
        shapes = {name: "x".join(map(str, x.shape[1:])) for name, x in splits.items()}
        if len(set(shapes.values())) > 1:
            found = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
            raise UserError(
                f"{self.name}: the splits hold images of different shapes (C x H x W: {found}); "
                "give every split images of one size and channel count (check data.root)"
            )

    def setup(self, stage: str | None = None) -> None:
        self._ensure_loaded()

    def _rank_info(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, x: torch.Tensor, y: torch.Tensor, train: bool) -> InMemoryLoader:
        rank, world = self._rank_info() if train else (0, 1)
        return InMemoryLoader(
            x,
            y,
            self.batch_size if train else self.eval_batch_size,
            self.mean,
            self.std,
            shuffle=train,
            augment=self.augment if train else None,
            drop_last=train,
            seed=self.seed,
            rank=rank,
            world_size=world,
        )

    def train_dataloader(self) -> InMemoryLoader:
        self._ensure_loaded()
        self.train_loader = self._loader(self.train_x, self.train_y, train=True)
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self.train_loader.set_epoch(trainer.current_epoch)
        return self.train_loader

    def calibration_dataloader(self) -> InMemoryLoader:
        """Training images as the model sees them at test time (no augmentation), in a fixed
        shuffled order and in training-size batches (ragged last batch dropped): the input of
        BatchNorm recalibration (``zoo.training.recalibrate``)."""
        self._ensure_loaded()
        return InMemoryLoader(
            self.train_x,
            self.train_y,
            self.batch_size,
            self.mean,
            self.std,
            shuffle=True,
            drop_last=True,
            seed=self.seed,
        )

    def val_dataloader(self) -> InMemoryLoader:
        self._ensure_loaded()
        if len(self.val_y) == 0:
            return []  # type: ignore[return-value]
        return self._loader(self.val_x, self.val_y, train=False)

    def test_dataloader(self) -> InMemoryLoader:
        self._ensure_loaded()
        return self._loader(self.test_x, self.test_y, train=False)

    def describe(self) -> dict:
        self._ensure_loaded()
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "image_size": list(self.image_size),
            "mean": [round(float(v), 6) for v in self.mean],
            "std": [round(float(v), 6) for v in self.std],
            "train": len(self.train_y),
            "val": len(self.val_y),
            "test": len(self.test_y),
        }


# --- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------------


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (LeCun's MNIST format), gzip-compressed or raw."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise UserError(f"{path} cannot be read ({err}); replace it with an intact copy") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise UserError(f"{path} is truncated: its header ends after {len(data)} bytes")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(data) - offset != int(np.prod(dims)):
        raise UserError(
            f"{path} is truncated: expected {int(np.prod(dims))} bytes of data, found "
            f"{len(data) - offset}; replace it with an intact copy"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=offset)
    return torch.from_numpy(array.reshape(dims).copy())


IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (
        folder / f"{stem}.gz",
        folder / stem,
        folder / "raw" / f"{stem}.gz",
        folder / "raw" / stem,
    ):
        if candidate.is_file():
            return candidate
    return None


class _IDXDataModule(InMemoryDataModule):
    num_classes = 10
    default_dirs: Sequence[Path] = ()
    how_to_get = ""
    torchvision_name = ""

    def _search_dirs(self) -> list[Path]:
        """``data.root`` (and its torchvision layout) when given, else the system copies."""
        if self.root:
            root = Path(self.root).expanduser()
            return [root, root / self.torchvision_name]
        return list(self.default_dirs)

    def load(self):
        for folder in self._search_dirs():
            paths = {k: _find_idx(folder, v) for k, v in IDX_FILES.items()}
            if all(paths.values()):
                t = {k: read_idx(p) for k, p in paths.items()}
                for split in ("train", "test"):
                    images, labels = t[f"{split}_x"], t[f"{split}_y"]
                    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                        raise UserError(
                            f"{self.name}: {paths[f'{split}_x']} holds {list(images.shape)} and "
                            f"{paths[f'{split}_y']} {list(labels.shape)}; expected N images "
                            "and N labels"
                        )
                return (
                    t["train_x"][:, None],
                    t["train_y"].long(),
                    t["test_x"][:, None],
                    t["test_y"].long(),
                )
        if self.download:
            return self._download()
        files = ", ".join(IDX_FILES.values())
        if self.root:
            raise UserError(
                f"{self.name}: data.root={self.root} does not hold the four IDX files ({files}, "
                f"raw or .gz, also looked in {self._search_dirs()[1]}); fix data.root, "
                "or set data.download=true to download into it"
                + (", or drop data.root to use the system copy" if self.default_dirs else "")
            )
        looked = ", ".join(str(d) for d in self._search_dirs()) or "nowhere"
        raise UserError(
            f"{self.name}: IDX files not found (looked in {looked}); {self.how_to_get}, "
            "or pass data.root=DIR with the four IDX files, or data.download=true"
        )

    def _download(self):
        root = Path(self.root or "data").expanduser()
        cls = getattr(torchvision.datasets, self.torchvision_name)
        try:
            train, test = (
                cls(root, train=True, download=True),
                cls(root, train=False, download=True),
            )
        except Exception as err:  # network errors come in many types
            raise UserError(f"{self.name}: download into {root} failed ({err})") from None
        return (train.data[:, None], train.targets.long(), test.data[:, None], test.targets.long())


class FashionMNISTDataModule(_IDXDataModule):
    """Fashion-MNIST (Xiao et al. 2017): 60k/10k 28×28 grey images, 10 classes."""

    name = "fashion_mnist"
    classes = (  # Xiao et al. 2017, Table 1
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )
    default_dirs = (DEBIAN_FMNIST,)
    how_to_get = "install it with 'apt-get install dataset-fashion-mnist' (Debian)"
    torchvision_name = "FashionMNIST"


class MNISTDataModule(_IDXDataModule):
    """MNIST (LeCun et al. 1998): 60k/10k 28×28 grey digits."""

    name = "mnist"
    classes = tuple(str(digit) for digit in range(10))
    how_to_get = "get the four IDX files from torchvision's mirror"
    torchvision_name = "MNIST"


# --- CIFAR ----------------------------------------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles: allow only the numpy array constructors they need."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def load_cifar_batch(path: Path) -> dict:
    """One python-version CIFAR batch: a pickled dict of numpy arrays, read without running code."""
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except OSError as err:
        raise UserError(f"{path} cannot be read ({err})") from None
    except Exception as err:  # any failure to parse these bytes means a damaged or foreign file
        raise UserError(
            f"{path} is not a CIFAR python batch ({type(err).__name__}: {err}); replace it with "
            "an intact copy of the dataset's python version"
        ) from None
    if not isinstance(batch, dict):
        raise UserError(f"{path} is not a CIFAR python batch (a {type(batch).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


class _CIFARDataModule(InMemoryDataModule):
    folder = ""
    train_files: Sequence[str] = ()
    test_files: Sequence[str] = ()
    label_key = "labels"
    meta_file, names_key = "batches.meta", "label_names"

    def load(self):
        base = Path(self.root or "data").expanduser()
        folder = base / self.folder if (base / self.folder).is_dir() else base
        missing = [f for f in (*self.train_files, *self.test_files) if not (folder / f).is_file()]
        if missing:
            if self.download:
                cls = (
                    torchvision.datasets.CIFAR10
                    if self.num_classes == 10
                    else torchvision.datasets.CIFAR100
                )
                try:
                    cls(base, train=True, download=True)
                except Exception as err:
                    raise UserError(f"{self.name}: download into {base} failed ({err})") from None
                folder = base / self.folder
            else:
                raise UserError(
                    f"{self.name}: {', '.join(missing)} not found in {folder}; put the "
                    f"python-version batches ({self.folder}) under data.root=DIR, or set "
                    "data.download=true"
                )

        def read(file: str) -> tuple[np.ndarray, np.ndarray]:
            batch = load_cifar_batch(folder / file)
            try:
                x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(batch[self.label_key], dtype=np.int64).reshape(-1)
            except (KeyError, ValueError, TypeError) as err:
                raise UserError(
                    f"{folder / file} is not a {self.name} batch: it needs 'data' (N x 3072 "
                    f"bytes) and {self.label_key!r} ({type(err).__name__}: {err})"
                ) from None
            if len(x) != len(y):
                raise UserError(f"{folder / file} holds {len(x)} images but {len(y)} labels")
            return x, y

        def read_all(files: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
            x, y = zip(*(read(f) for f in files), strict=True)
            return torch.from_numpy(np.concatenate(x)), torch.from_numpy(np.concatenate(y))

        self.classes = self._class_names(folder / self.meta_file)
        return (*read_all(self.train_files), *read_all(self.test_files))

    def _class_names(self, meta: Path) -> list[str]:
        """The label names of the dataset's meta file; none if it is missing or damaged (the
        names only label figures)."""
        try:
            names = load_cifar_batch(meta).get(self.names_key, [])
        except UserError:
            return []
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        return names if len(names) == self.num_classes else []


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10 (Krizhevsky 2009) from the python-pickle batches ``cifar-10-batches-py``."""

    name = "cifar10"
    num_classes = 10
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100 (fine labels) from ``cifar-100-python``."""

    name = "cifar100"
    num_classes = 100
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    label_key = "fine_labels"
    meta_file, names_key = "meta", "fine_label_names"


# --- ImageFolder --------------------------------------------------------------------------------


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def class_folders(split: Path) -> list[str]:
    """The class folders of one split, sorted (hidden folders such as ``.ipynb_checkpoints`` are
    not classes)."""
    return sorted(p.name for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


class ImageFolderDataModule(InMemoryDataModule):
    """A class-per-folder tree (``root/train/<class>/*.png``, ``root/test/<class>/*``; ``val/`` is
    used for validation when present, else a split of ``train/``), resized to ``image_size``.

    The classes are the folders of ``train/``; each needs at least one image there, and ``test/``
    and ``val/`` may hold no class that ``train/`` lacks (the model could never predict it). A
    damaged image file stops loading with its name.
    """

    name = "imagefolder"

    def __init__(
        self, root: str | None = None, image_size: int = 32, grayscale: bool = False, **kwargs
    ) -> None:
        super().__init__(root=root, **kwargs)
        self.resize = image_size
        self.grayscale = grayscale
        self.classes: list[str] = []

    def _read_image(self, file: Path) -> np.ndarray:
        try:
            with Image.open(file) as img:
                img = img.convert("L" if self.grayscale else "RGB")
                img = img.resize((self.resize, self.resize), Image.BILINEAR)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise UserError(
                f"imagefolder: cannot read image {file} ({err}); replace or remove it"
            ) from None
        arr = np.asarray(img, dtype=np.uint8)
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)

    def _read_split(
        self, folder: Path, every_class: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        extra = sorted(set(class_folders(folder)) - set(self.classes))
        if extra:
            raise UserError(
                f"imagefolder: {folder} has class folder(s) {', '.join(extra)} that "
                f"{folder.parent / 'train'} lacks: a model trained there can never predict "
                "them; add them to train/ or remove them"
            )
        images, labels = [], []
        for label, cls in enumerate(self.classes):
            files = (
                [f for f in sorted((folder / cls).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
                if (folder / cls).is_dir()
                else []
            )
            if not files and every_class:
                raise UserError(
                    f"imagefolder: class folder {folder / cls} has no images "
                    f"({', '.join(IMAGE_SUFFIXES)}); add some or remove the folder"
                )
            images += [self._read_image(f) for f in files]
            labels += [label] * len(files)
        if not images:
            raise UserError(f"imagefolder: no images under {folder}")
        return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long)

    def load(self):
        if not self.root:
            raise UserError("imagefolder: set data.root=DIR (with train/ and test/ class folders)")
        root = Path(self.root).expanduser()
        if not (root / "train").is_dir() or not (root / "test").is_dir():
            raise UserError(f"imagefolder: {root} must contain train/ and test/ class folders")
        self.classes = class_folders(root / "train")
        if len(self.classes) < 2:
            raise UserError(
                f"imagefolder: {root / 'train'} has {len(self.classes)} class folder(s); a "
                "classifier needs at least 2 (one folder per class)"
            )
        self.num_classes = len(self.classes)
        train_x, train_y = self._read_split(root / "train", every_class=True)
        test_x, test_y = self._read_split(root / "test")
        if (root / "val").is_dir():
            self.fixed_val = self._read_split(root / "val")
        return train_x, train_y, test_x, test_y


# --- Synthetic ----------------------------------------------------------------------------------


class SyntheticDataModule(InMemoryDataModule):
    """Learnable class-dependent images of any size and channel count (tests and benchmarks).

    Each class has a fixed random low-frequency prototype; a sample is its class prototype with a
    random shift and Gaussian noise, so models can learn it but not trivially.
    """

    name = "synthetic"

    def __init__(
        self,
        num_samples: int = 512,
        num_test: int = 256,
        image_size: int = 32,
        in_chans: int = 3,
        num_classes: int = 10,
        noise: float = 0.3,
        **kwargs,
    ) -> None:
        kwargs.setdefault("val_size", max(1, num_samples // 8))
        super().__init__(**kwargs)
        self.num_samples, self.num_test = num_samples, num_test
        self.size, self.chans = image_size, in_chans
        self.num_classes = num_classes
        self.noise = noise

    def load(self):
        gen = torch.Generator().manual_seed(1234)
        coarse = torch.rand(self.num_classes, self.chans, 4, 4, generator=gen)
        protos = torch.nn.functional.interpolate(
            coarse, size=(self.size, self.size), mode="bilinear", align_corners=False
        )

        def sample(n: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
            g = torch.Generator().manual_seed(1234 + offset)
            y = torch.randint(0, self.num_classes, (n,), generator=g)
            x = protos[y] + self.noise * torch.randn(
                n, self.chans, self.size, self.size, generator=g
            )
            shift = torch.randint(-2, 3, (2,), generator=g).tolist()
            x = torch.roll(x, shifts=shift, dims=(2, 3))
            return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

        return (*sample(self.num_samples, 1), *sample(self.num_test, 2))
