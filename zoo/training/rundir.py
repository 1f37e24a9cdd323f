"""Run folders: never silently overwritten, used by one process at a time.

A folder that already holds a run (finished or not) is only reused to resume it
(``ckpt_path=last``) or when the user asks to start over (``overwrite=true``). Starting over moves
the old run into ``.overwritten/`` once the new run's config, data and model have been checked, and
deletes it only when the new run has really started (it wrote ``last.ckpt`` or ``results.json``);
a new run that fails before that, or is killed, gets the old run put back (at the latest by the
next command in the folder). A lock file with the owner's PID keeps a second process out of a
folder in use; a lock whose process is gone is stale and taken over. Hydra's record of the command
(``.hydra/``) is written by the task once the command has passed its checks, so a refused command
leaves the record of the run in the folder as it was.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zoo.errors import UserError

RUN_FILES = ("config.yaml", "metrics.csv", "results.json", "checkpoints", "tensorboard")
# Everything a training run writes into its folder: what overwrite=true replaces (Hydra's job log,
# *.log, stays: every command in the folder appends to it).
RUN_OUTPUTS = (
    *RUN_FILES,
    "hparams.yaml",
    ".hydra",
    "activation_stats.json",
    "activation_stats.md",
    "overfit.json",
)
LOCK_NAME = ".lock"
ASIDE_NAME = ".overwritten"


def existing_run_files(out: Path) -> list[str]:
    return [name for name in RUN_FILES if (out / name).exists()]


def check_run_dir(out: Path, *, resume: bool, overwrite: bool) -> bool:
    """Refuse to start a new run in a folder that holds one; True when the new run will replace
    the one there (:func:`replacing`): with ``overwrite``, or on a ``resume`` that finds nothing
    to resume (so that the new run's history does not mix with the dead attempt's)."""
    settle_overwrite(out)  # an overwriting run killed before it settled
    found = existing_run_files(out)
    resumable = (out / "checkpoints" / "last.ckpt").is_file()
    if not found or (resume and resumable):
        return False
    if overwrite:
        return True
    if resume and not (out / "results.json").is_file():
        return True  # nothing to resume: an attempt that never saved a checkpoint is replaced
    if resume:
        raise UserError(
            f"ckpt_path=last but the finished run in {out} has no checkpoints/last.ckpt to "
            "resume: start over with overwrite=true, or choose another folder with "
            "hydra.run.dir=DIR"
        )
    raise UserError(
        f"{out} already holds a run ({', '.join(found)}): resume it with ckpt_path=last, "
        "start over with overwrite=true, or choose another folder with hydra.run.dir=DIR"
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def new_run_started(out: Path) -> bool:
    """The run in ``out`` can be resumed or has finished: an old run it replaces can go."""
    return (out / "checkpoints" / "last.ckpt").is_file() or (out / "results.json").is_file()


def settle_overwrite(out: Path) -> None:
    """Finish an overwrite: delete the old run in ``.overwritten/`` if the new run has started,
    else remove the new run's files and put the old run back."""
    aside = out / ASIDE_NAME
    if not aside.is_dir():
        return
    if new_run_started(out):
        shutil.rmtree(aside)
        return
    for name in RUN_OUTPUTS:
        _remove(out / name)
    for entry in aside.iterdir():
        os.replace(entry, out / entry.name)
    aside.rmdir()


@contextmanager
def replacing(out: Path, replace: bool) -> Iterator[None]:
    """With ``replace``: the old run moves aside while the block runs a new one; afterwards (error
    or not) :func:`settle_overwrite` deletes it or puts it back."""
    if not replace:
        yield
        return
    aside = out / ASIDE_NAME
    aside.mkdir()
    for name in RUN_OUTPUTS:
        if (out / name).exists() or (out / name).is_symlink():
            os.replace(out / name, aside / name)
    try:
        yield
    finally:
        settle_overwrite(out)


def not_writable(out: Path, err: OSError) -> UserError:
    """The one-line error for a run folder this process may not write (naming the folder that
    refused the write)."""
    if err.errno == errno.ENOTDIR:
        return UserError(f"{err.filename} is a file, not a folder: choose another run folder")
    where = Path(err.filename).parent if err.filename else out
    return UserError(
        f"cannot write into {where} ({os.strerror(err.errno or errno.EACCES)}): make the run "
        "folder writable or choose another with hydra.run.dir=DIR"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


WRITE_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR)


@contextmanager
def writable(out: Path) -> Iterator[None]:
    """A file of the run in ``out`` that this process may not write: a one-line UserError."""
    try:
        yield
    except OSError as err:
        if err.errno not in WRITE_ERRORS:
            raise
        raise not_writable(out, err) from None


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` while the block runs; a live lock of another process is a UserError."""
    lock = out / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}\n"
    with writable(out):
        file = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
        if file is not None:
            raise NotADirectoryError(errno.ENOTDIR, "a file, not a folder", str(file))
        out.mkdir(parents=True, exist_ok=True)
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
