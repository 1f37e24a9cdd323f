"""Writing matplotlib figures atomically (PNG)."""

from __future__ import annotations

import io
from pathlib import Path

from zoo.io import atomic_write_bytes


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path
