"""The entry points' shared wrapper: Hydra composition, one-line errors, exit code 2.

``train.py`` and ``evaluate.py`` call ``run(fn, config_name)``. Mistakes in the command line
(unknown model, dataset or config key, a missing file) print one line with the closest valid names
and exit with status 2, without a traceback; ``HYDRA_FULL_ERROR=1`` shows the traceback.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable

import hydra
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from zoo.errors import UserError
from zoo.paths import CONF_DIR
from zoo.runtime import configure_allocator, set_threads


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


def validate_overrides(config_name: str, argv: list[str]) -> None:
    """Compose once before Hydra runs, so that bad overrides fail fast with a one-line error."""
    if any(a in ("-m", "--multirun") or a.startswith("--") for a in argv):
        return  # sweeps and Hydra's own flags: let Hydra handle them
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        with hydra.initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            hydra.compose(config_name, overrides=overrides)
    except (ConfigCompositionException, MissingConfigException, OverrideParseException) as err:
        fail(explain_composition_error(err, config_name, overrides))
    finally:
        hydra.core.global_hydra.GlobalHydra.instance().clear()


def run(fn: Callable[[DictConfig], object], config_name: str) -> None:
    """Run ``fn(cfg)`` under ``hydra.main`` with the zoo's error handling."""
    if not os.environ.get("HYDRA_FULL_ERROR"):
        validate_overrides(config_name, sys.argv[1:])

    def task(cfg: DictConfig):
        try:
            return fn(cfg)
        except UserError as err:
            if os.environ.get("HYDRA_FULL_ERROR"):
                raise
            fail(str(err))

    hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)()


def dispatch_task(cfg: DictConfig):
    """``evaluate.py``'s body: call the function named by ``cfg.task.fn`` with the whole config."""
    try:
        fn = hydra.utils.get_method(cfg.task.fn)
    except Exception as err:
        raise UserError(f"task function {cfg.task.fn!r} cannot be imported ({err})") from None
    configure_allocator(cfg.get("allocator", "retain"))
    set_threads(cfg.get("threads"))
    return fn(cfg)
