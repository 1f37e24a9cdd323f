"""Training: the LightningModule, callbacks and the run function behind ``train.py``."""

from zoo.training.module import NonFiniteLossError, ZooClassifier
from zoo.training.recalibrate import recalibrate_bn

__all__ = ["NonFiniteLossError", "ZooClassifier", "recalibrate_bn"]
