"""Training: the LightningModule, callbacks and the run function behind ``train.py``."""

from zoo.training.module import NonFiniteLossError, ZooClassifier

__all__ = ["NonFiniteLossError", "ZooClassifier"]
