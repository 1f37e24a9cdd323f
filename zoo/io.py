"""Writing results: atomic file writes (a crash never leaves a half-written result or checkpoint)
and figures on a display-free backend."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from zoo.errors import UserError


def check_output_file(out: Path, source: Path | None = None) -> None:
    """A file a tool is asked to write: into a folder that exists (a mistyped path is reported, no
    folders are made where a typo points), not a folder itself, and not the ``source`` it is made
    from. A one-line UserError otherwise."""
    if out.is_dir():
        raise UserError(f"{out} is a folder: give the path of the file to write")
    if not out.parent.is_dir():
        raise UserError(
            f"{out.parent} does not exist: create it first, or write {out.name} elsewhere"
        )
    if source is not None and out.resolve() == source.resolve():
        raise UserError(f"{out} is the file it is made from: write to another file")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give them the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_marked_block(doc: str | Path, name: str, text: str, *, append: bool = False) -> None:
    """Replace what lies between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in ``doc`` with
    ``text``, leaving the prose around it as it is (generated tables inside hand-written docs).

    Without the markers: ``append=True`` adds the block at the end (a new file holds just the
    block); otherwise ``SystemExit`` names the markers to add."""
    doc = Path(doc)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.strip(chr(10))}\n{end}"
    old = doc.read_text() if doc.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1]
    elif append:
        new = (old.rstrip("\n") + "\n\n" if old.strip() else "") + block + "\n"
    else:
        raise SystemExit(f"{doc}: markers {begin} / {end} not found: add them where the table goes")
    atomic_write_text(doc, new)


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend: figures are only written to files,
    so no display is needed (and none is opened on a desktop)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def atomic_write_figure(path: str | Path, fig, tight: bool = True, dpi: int = 100) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
