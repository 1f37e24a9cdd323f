"""Data: in-memory LightningDataModules for every dataset the zoo trains on.

Every datamodule has ``name``, ``num_classes``, ``classes`` (the class names in label order, empty
where the data has none), ``in_chans``, ``image_size`` (H, W), ``mean`` and ``std`` (per channel,
from the training split) and yields normalized ``(x, y)`` batches.
"""

from zoo.data.datamodules import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    InMemoryDataModule,
    MNISTDataModule,
    SyntheticDataModule,
)
from zoo.data.loader import BatchAugment, InMemoryLoader

__all__ = [
    "BatchAugment",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "InMemoryDataModule",
    "InMemoryLoader",
    "MNISTDataModule",
    "SyntheticDataModule",
]
