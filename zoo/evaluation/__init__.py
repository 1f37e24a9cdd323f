"""Measuring trained and untrained models: test-set metrics, comparison tables, benchmarks
against torchvision/timm and gradient checks. The commands behind them are in :mod:`zoo.tasks`."""
