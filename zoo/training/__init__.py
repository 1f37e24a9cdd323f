"""Training: the classifier LightningModule, callbacks, loggers and schedules, and the steps of a
run (fit, resume, test, ``results.json``) that :mod:`zoo.tasks.train` puts together."""

from zoo.training.module import NonFiniteLossError, ZooClassifier
from zoo.training.recalibrate import recalibrate_bn

__all__ = ["NonFiniteLossError", "ZooClassifier", "recalibrate_bn"]
