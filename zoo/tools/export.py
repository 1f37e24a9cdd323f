"""Export a training checkpoint as plain weights.

``python -m zoo.tools.export CKPT OUT.safetensors`` writes ``OUT.safetensors`` (tensors only,
loadable without pickle) and ``OUT.json`` beside it: model name, builder arguments, data statistics
and, when the run's ``results.json`` is found, its metrics. ``create_model(name,
pretrained=OUT.safetensors)`` and ``evaluate.py ckpt_path=...`` read it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from safetensors.torch import save

from zoo.errors import UserError
from zoo.io import atomic_write_bytes, atomic_write_json
from zoo.pretrained import model_from_checkpoint


def export(ckpt: Path, out: Path, tag: str = "fmnist", command: str = "") -> dict:
    model, info = model_from_checkpoint(ckpt)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    blob = save(tensors)
    atomic_write_bytes(out, blob)
    results = next(
        (p / "results.json" for p in ckpt.resolve().parents if (p / "results.json").is_file()), None
    )
    metrics = {}
    if results is not None:
        r = json.loads(results.read_text())
        metrics = {
            k: r[k]
            for k in (
                "test_acc1",
                "test_acc5",
                "test_loss",
                "best_val_acc1",
                "epochs",
                "wall_time_s",
            )
            if r.get(k) is not None
        }
    meta = {
        **info,
        "tag": tag,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "metrics": metrics,
        "command": command,
        "source_checkpoint": ckpt.name,
    }
    atomic_write_json(out.with_suffix(".json"), meta)
    return meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("output", type=Path, help="the .safetensors file to write")
    parser.add_argument("--tag", default="fmnist", help="pretrained tag name recorded in the json")
    parser.add_argument("--command", default="", help="the training command, for the record")
    args = parser.parse_args(argv)
    try:
        if args.output.suffix != ".safetensors":
            raise UserError(f"the output file must end in .safetensors, not {args.output.name}")
        meta = export(args.checkpoint, args.output, args.tag, args.command)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {args.output} and {args.output.with_suffix('.json')} ({meta['model']})")


if __name__ == "__main__":
    main()
