"""Result tables: one cell format and one Markdown layout for the comparison and the benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_cell(value: Any, missing: str = "") -> str:
    """Thousands separators for large numbers, three significant digits for small ones."""
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def markdown_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    header: str = "",
    missing: str = "",
) -> str:
    """A Markdown table of ``rows`` with ``columns`` as ``(key, label)``, under ``header``."""
    lines = [header, ""] if header else []
    lines += ["| " + " | ".join(label for _, label in columns) + " |"]
    lines += ["|" + "---|" * len(columns)]
    lines += [
        "| " + " | ".join(format_cell(r.get(key), missing) for key, _ in columns) + " |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"
