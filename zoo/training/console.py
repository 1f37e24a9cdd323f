"""A quiet console: third-party advertising tips and deprecation notices of our dependencies are
dropped where they are raised (by logger and message), nothing else; progress bars and the summary
table stay."""

from __future__ import annotations

import logging
import warnings

# (logger, message start) of Lightning's info lines that say nothing about this run.
DROPPED_LOG_LINES = (
    ("pytorch_lightning.utilities.rank_zero", "💡 Tip:"),
    ("pytorch_lightning.utilities.rank_zero", "GPU available: False"),
    ("pytorch_lightning.utilities.rank_zero", "TPU available: False"),
)
# (message regex, module regex) of deprecation warnings raised inside our dependencies.
DROPPED_WARNINGS = (
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated", r"pytorch_lightning\..*"),
)


class _DropLines(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


def quiet_third_party() -> None:
    """Install the filters (idempotent)."""
    by_logger: dict[str, tuple[str, ...]] = {}
    for name, start in DROPPED_LOG_LINES:
        by_logger[name] = (*by_logger.get(name, ()), start)
    for name, starts in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(starts))
    for message, module in DROPPED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
