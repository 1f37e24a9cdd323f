"""Every ``python train.py``/``python evaluate.py`` command in README.md and docs/ composes."""

from __future__ import annotations

import re
import shlex

import pytest
from helpers import compose
from hydra.errors import ConfigCompositionException

from zoo.paths import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"python (train|evaluate)\.py((?: [^`\n#|]+)?)")
# Hydra's own flags and launcher plugins that are optional installs are not composed here.
SKIP = ("hydra/launcher=", "--")


def _optional(word: str) -> str:
    """``[key=value]`` (an optional argument, maybe cut at a ``|`` alternative) -> ``key=value``."""
    if word.startswith("[") and "=" in word:
        return word[1:-1] if word.endswith("]") and word.count("[") == word.count("]") else word[1:]
    return word


def documented_commands() -> list[tuple[str, str, tuple[str, ...]]]:
    found = {}
    for doc in DOCS:
        for script, args in COMMAND.findall(doc.read_text()):
            if "..." in args:  # an elided command in prose
                continue
            words = shlex.split(args.replace("\\", " ")) if args.strip() else []
            words = tuple(_optional(w) for w in words if w not in ("-m", "--multirun"))
            if any(w.startswith(SKIP) for w in words):
                continue
            found[(script, words)] = doc.name
    return [(doc, script, words) for (script, words), doc in sorted(found.items())]


COMMANDS = documented_commands()


def test_the_docs_have_commands() -> None:
    assert len(COMMANDS) > 20


@pytest.mark.parametrize(("doc", "script", "words"), COMMANDS, ids=lambda v: str(v)[:60])
def test_documented_command_composes(doc: str, script: str, words: tuple[str, ...]) -> None:
    config = "train" if script == "train" else "evaluate"
    try:
        compose(list(words), config)
    except ConfigCompositionException as err:
        pytest.fail(f"{doc}: python {script}.py {' '.join(words)}: {err}")
