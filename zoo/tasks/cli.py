"""The entry points' shared wrapper: Hydra composition, one-line errors, exit code 2, and the
dispatch to the task (:mod:`zoo.tasks`) the config names.

``train.py`` and ``evaluate.py`` call ``run(fn, config_name)`` with :func:`train_or_study` and
:func:`dispatch_task`. Mistakes in the command line
(unknown model, dataset or config key, a value left out, a missing file, a run folder that is a
file or cannot be written) print one line with the closest valid names and exit with status 2,
without a traceback; ``HYDRA_FULL_ERROR=1`` shows the traceback (any other value, ``0`` included,
does not: Hydra's own reading of the variable). A run stopped by SIGTERM or Ctrl-C prints how to
resume it and exits with 128 + the signal's number (143, 130).
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from zoo.errors import RunInterrupted, UserError
from zoo.paths import CONF_DIR
from zoo.tasks import train
from zoo.tasks.common import record_command
from zoo.tasks.config_checks import check_no_missing_values
from zoo.training.runtime import configure_allocator, set_threads


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def group_options(group: str) -> list[str]:
    folder = CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=4, cutoff=0.5)
    return f"did you mean: {', '.join(close)}?" if close else f"options: {', '.join(options)}"


def explain_composition_error(err: Exception, config_name: str, overrides: list[str]) -> str:
    text = str(err).strip().splitlines()[0]
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if "." not in key and group_options(key) and value not in group_options(key):
            return f"unknown {key} {value!r}; {_suggest(value, group_options(key))}"
    match = re.search(r"Could not override '([^']+)'", str(err)) or re.search(
        r"Key '([^']+)' is not in struct", str(err)
    )
    if match:
        full_key = match.group(1)
        bad = next((o for o in overrides if o.split("=")[0].lstrip("+~") == full_key), None)
        parent, _, leaf = full_key.rpartition(".")
        known = _known_keys(config_name, [o for o in overrides if o is not bad], parent)
        close = difflib.get_close_matches(leaf, known, n=4, cutoff=0.5)
        hint = f"did you mean: {', '.join(f'{parent}.{k}' for k in close)}? " if close else ""
        return f"unknown config key {full_key!r}; {hint}(write +{full_key}=... to add a new key)"
    return text


def _known_keys(config_name: str, overrides: list[str], parent: str) -> list[str]:
    """The keys at ``parent`` in the config composed without the offending override."""
    try:
        with hydra.initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = hydra.compose(config_name, overrides=overrides)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        return list(node.keys()) if node is not None else []
    except Exception:
        return []


def full_error() -> bool:
    """``HYDRA_FULL_ERROR=1``: tracebacks, not one-line errors ("1" only, as Hydra reads it)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def check_run_dir_path(run_dir: Path) -> None:
    """Hydra creates the run folder and its job log before the task runs, with a traceback when it
    cannot: a folder that is a file, or one this process may not write, is refused first."""
    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        fail(f"hydra.run.dir={run_dir}: {existing} is a file, not a folder; choose another DIR")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(
            f"hydra.run.dir={run_dir}: {existing} is not writable; make it writable or choose "
            "another hydra.run.dir=DIR"
        )


def validate_overrides(config_name: str, argv: list[str]) -> None:
    """Compose once before Hydra runs, so that bad overrides and a run folder that cannot be used
    fail fast with a one-line error."""
    if any(a in ("-m", "--multirun") or a.startswith("--") for a in argv):
        return  # sweeps and Hydra's own flags: let Hydra handle them
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        with hydra.initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = hydra.compose(config_name, overrides=overrides, return_hydra_config=True)
    except (ConfigCompositionException, MissingConfigException, OverrideParseException) as err:
        fail(explain_composition_error(err, config_name, overrides))
    finally:
        hydra.core.global_hydra.GlobalHydra.instance().clear()
    try:
        run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    except Exception:  # ${hydra:...} resolves only inside the job: Hydra checks it there
        return
    if run_dir:
        check_run_dir_path(Path(str(run_dir)))


def run(fn: Callable[[DictConfig], object], config_name: str) -> None:
    """Run ``fn(cfg)`` under ``hydra.main`` with the zoo's error handling."""
    if not full_error():
        validate_overrides(config_name, sys.argv[1:])

    def task(cfg: DictConfig):
        try:
            check_no_missing_values(cfg)
            return fn(cfg)
        except RunInterrupted as err:
            print(err, file=sys.stderr)
            sys.exit(err.exit_code)
        except UserError as err:
            if full_error():
                raise
            fail(str(err))

    hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)()


def task_function(path: str, key: str) -> Callable[[DictConfig], object]:
    """The task function a config names (``task.fn``, ``study.fn``); a one-line error if it cannot
    be imported."""
    try:
        return hydra.utils.get_method(path)
    except Exception as err:
        raise UserError(f"{key}={path!r} cannot be imported ({err})") from None


def train_or_study(cfg: DictConfig) -> object:
    """``train.py``'s body: the study's function (``study.fn``, e.g. :mod:`zoo.tasks.shortcut`)
    when the config has a ``study`` node, else one training run (:mod:`zoo.tasks.train`)."""
    if not cfg.get("study"):
        return train.run(cfg)
    fn = task_function(cfg.study.fn, "study.fn")
    record_command(Path(cfg.output_dir), cfg)  # the study's folder; its runs have their own
    return fn(cfg)


def dispatch_task(cfg: DictConfig):
    """``evaluate.py``'s body: call the function named by ``cfg.task.fn`` with the whole config."""
    fn = task_function(cfg.task.fn, "task.fn")
    configure_allocator(cfg.get("allocator", "retain"))
    set_threads(cfg.get("threads"))
    # Hydra's record of this command, unless the folder has one (a training run's): never
    # rewritten by an evaluation pointed at a run folder.
    record_command(Path(cfg.output_dir), cfg, replace=False)
    return fn(cfg)
