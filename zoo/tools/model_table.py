"""Print (or write) the Markdown table of every registered model.

``python -m zoo.tools.model_table`` prints it; ``--write README.md`` replaces the table between
the ``<!-- models:begin -->`` and ``<!-- models:end -->`` markers, so the
README's model table is generated, never hand-edited.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.io import write_marked_block
from zoo.weights.factory import list_models, model_info


def markdown_table() -> str:
    rows = [
        "| model | family | params | input (C×H×W) | classes | pretrained | paper |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for name in list_models():
        info = model_info(name)
        c, h, w = info["input_size"]
        tags = ", ".join(info["pretrained"]) or "–"
        rows.append(
            f"| `{name}` | {info['family']} | {info['num_params']:,} | {c}×{h}×{w} "
            f"| {info['num_classes']} | {tags} | {info['paper']} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="file whose marked table to replace")
    args = parser.parse_args(argv)
    table = markdown_table()
    if args.write is None:
        print(table)
        return
    write_marked_block(args.write, "models", table)


if __name__ == "__main__":
    main()
