"""Importing this package registers every model family (one module per family)."""

from zoo.models import lenet  # noqa: F401
