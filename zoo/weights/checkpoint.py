"""Checkpoints for tasks: the exact model a zoo checkpoint holds.

Tasks that analyse one trained model (``evaluate.py task=eval|landscape|hessian|robustness``) start
from a Lightning ``.ckpt`` written by ``train.py`` or from an exported ``.safetensors`` with its
``.json`` beside it (``python -m zoo.tools.export``). The model is rebuilt from the saved name and
builder arguments and its weights are loaded strictly: weights that do not fit (a classifier or a
first convolution of another size) are refused, never adapted or re-initialised, so an evaluation
can never score a random head. Damaged or foreign files end in one ``UserError`` naming the file.
The statistics of the data it was trained on (mean, std of its training split) come back in its
``info``, so that an evaluation normalises its data with them rather than recomputing them.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save
from torch import nn

from zoo.errors import UserError
from zoo.io import atomic_write_bytes, atomic_write_json
from zoo.weights.factory import create_model
from zoo.weights.pretrained import read_state_dict, read_weights_description, unwrap_state_dict

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's archive format
PICKLE_MAGIC = b"\x80"  # torch.save's legacy format: a pickle, protocol 2 or later


def _check_file(path: Path) -> None:
    """Reject what cannot be a checkpoint before a reader sees it: no file, a directory, an empty
    file, or (for ``.ckpt``/``.pt``) bytes that are neither torch.save format."""
    if path.is_dir():
        raise UserError(
            f"checkpoint {path} is a directory; give a file such as {path}/checkpoints/best.ckpt"
        )
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty (0 bytes): it was not written completely")
    if path.suffix != ".safetensors":
        with open(path, "rb") as f:
            head = f.read(4)
        if not (head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_MAGIC)):
            raise UserError(
                f"{path} is not a PyTorch checkpoint (its first bytes are {head!r}); give a .ckpt "
                "written by train.py or a .safetensors exported by python -m zoo.tools.export"
            )
        if head.startswith(ZIP_MAGIC) and not zipfile.is_zipfile(path):
            raise UserError(f"checkpoint {path} is truncated (its zip directory is missing)")


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a zoo checkpoint and its ``info``: ``model``, ``model_kwargs``, ``data``."""
    path = Path(path).expanduser()
    _check_file(path)
    if path.suffix == ".safetensors":
        info = read_weights_description(path)
        try:
            sd = read_state_dict(path)
        except SafetensorError as err:
            raise UserError(
                f"{path} is not a readable .safetensors file ({err}): it may be truncated; "
                "export or download it again"
            ) from None
        return sd, info
    ckpt = read_state_dict(path)
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or "model_name" not in hp:
        raise UserError(
            f"{path.name} is not a zoo training checkpoint (no model_name in its "
            "hyper_parameters); use create_model(name, pretrained=path) for plain weights"
        )
    info = {
        "model": hp["model_name"],
        "model_kwargs": dict(hp.get("model_kwargs") or {}),
        "data": dict(hp.get("data") or {}),
    }
    state = ckpt.get("state_dict")
    if isinstance(state, dict) and any(k.startswith("model.") for k in state):
        # The LightningModule holds the network as ``model``; anything else it saved is not ours.
        sd = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    else:
        sd = unwrap_state_dict(ckpt)
    return sd, info


def save_weights(model: nn.Module, info: dict[str, Any], out: str | Path, **record: Any) -> dict:
    """Write ``model``'s tensors to ``out`` (.safetensors, no pickle) and ``out``'s ``.json``:
    ``info`` (model name, builder arguments, data), the file's SHA-256 and ``record`` (tag,
    metrics, command, ...). Both files are written atomically. Returns the JSON written."""
    out = Path(out)
    blob = save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    atomic_write_bytes(out, blob)
    keep = {k: info[k] for k in ("model", "model_kwargs", "data") if k in info}
    meta = {**keep, "sha256": hashlib.sha256(blob).hexdigest(), **record}
    atomic_write_json(out.with_suffix(".json"), meta)
    return meta


def _show(keys: list[str], limit: int = 4) -> str:
    return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(sd)`` with every missing, unexpected or misshapen key an error."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    misshapen = [
        f"{k} {list(sd[k].shape)} in the file, {list(own[k].shape)} in the model"
        for k in sorted(set(own) & set(sd))
        if sd[k].shape != own[k].shape
    ]
    parts = [
        f"{len(missing)} missing [{_show(missing)}]" if missing else "",
        f"{len(unexpected)} unexpected [{_show(unexpected)}]" if unexpected else "",
        f"{len(misshapen)} of another shape [{_show(misshapen, 2)}]" if misshapen else "",
    ]
    if any(parts):
        raise UserError(
            f"{source}: the weights do not fit the model their own config describes: "
            + "; ".join(p for p in parts if p)
            + ". Nothing is re-initialised for an evaluation: use the config these weights "
            "were saved with"
        )
    model.load_state_dict(sd, strict=True)


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild exactly the model of a ``.ckpt`` or an exported ``.safetensors`` + ``.json``.

    Returns ``(model, info)``, the model in eval mode on the CPU.
    """
    sd, info = read_checkpoint(path)
    name, kwargs = info["model"], dict(info["model_kwargs"])
    try:
        model = create_model(name, **kwargs)
    except (ValueError, TypeError) as err:  # unknown name or builder argument
        raise UserError(f"{Path(path).name}: {err}") from None
    load_strict(model, sd, f"{Path(path).name} ({name}, {kwargs})")
    return model.eval(), info
