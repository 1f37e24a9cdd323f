"""Importing this package registers every model family (one module per family)."""

from zoo.models import lenet  # noqa: F401
from zoo.models import resnet  # noqa: F401
