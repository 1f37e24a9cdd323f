"""Run folders: never silently overwritten, used by one process at a time.

A folder that already holds a run (finished or not) is only reused to resume it
(``ckpt_path=last``) or when the user asks to start over (``overwrite=true``). A lock file with the
owner's PID keeps a second process out of a folder in use; a lock whose process is gone is stale and
taken over.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zoo.errors import UserError

RUN_FILES = ("config.yaml", "metrics.csv", "results.json", "checkpoints", "tensorboard")
LOCK_NAME = ".lock"


def existing_run_files(out: Path) -> list[str]:
    return [name for name in RUN_FILES if (out / name).exists()]


def check_run_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run in a folder that holds one; clear it with ``overwrite``."""
    found = existing_run_files(out)
    if not found or resume:
        return
    if overwrite:
        for name in found:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return
    raise UserError(
        f"{out} already holds a run ({', '.join(found)}): resume it with ckpt_path=last, "
        "start over with overwrite=true, or choose another folder with hydra.run.dir=DIR"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` while the block runs; a live lock of another process is a UserError."""
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = lock.read_text(errors="replace").split()
            pid = int(owner[0]) if owner and owner[0].isdigit() else None
            host = owner[1] if len(owner) > 1 else None
            here = host in (None, socket.gethostname())
            if pid is not None and pid != os.getpid() and (not here or _pid_alive(pid)):
                raise UserError(
                    f"another run (PID {pid}{'' if here else ' on ' + host}) is using {out}; "
                    "wait for it to end or use another hydra.run.dir=DIR"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    try:
        yield
    finally:
        if lock.is_file() and lock.read_text(errors="replace") == me:
            lock.unlink(missing_ok=True)
