"""Checkpoints for tasks (zoo.weights.checkpoint): exact rebuilds, strict loading, one-line errors
for damaged, foreign or mismatched files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import zoo
from zoo.errors import UserError
from zoo.weights.checkpoint import model_from_checkpoint

LENET = {"model": "lenet5", "model_kwargs": {"num_classes": 10, "in_chans": 1}}


def export_weights(folder: Path, model: torch.nn.Module, info: dict, name: str = "w") -> Path:
    """Weights as ``python -m zoo.tools.export`` writes them: .safetensors and .json."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps(info))
    return path


def lightning_checkpoint(path: Path, model: torch.nn.Module, **extra: torch.Tensor) -> Path:
    """A checkpoint shaped as train.py's: the network under ``model.``, builder args in hparams."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()} | extra
    hparams = {"model_name": "lenet5", "model_kwargs": LENET["model_kwargs"], "data": {}}
    torch.save({"state_dict": state, "hyper_parameters": hparams, "epoch": 3}, path)
    return path


def test_rebuilds_the_saved_model_exactly(tmp_path: Path) -> None:
    model = zoo.create_model("lenet5", **LENET["model_kwargs"]).eval()
    x = torch.randn(2, 1, 28, 28)
    ckpt = lightning_checkpoint(tmp_path / "best.ckpt", model, **{"teacher.w": torch.ones(1)})
    for path in (ckpt, export_weights(tmp_path, model, LENET)):
        rebuilt, info = model_from_checkpoint(path)
        assert info["model"] == "lenet5" and not rebuilt.training
        assert torch.equal(rebuilt(x), model(x))


def _damaged_files(folder: Path) -> dict[str, Path]:
    """Files a user may pass as ckpt_path= by mistake, each with the part the error must name."""
    model = zoo.create_model("lenet5", **LENET["model_kwargs"])
    good_ckpt = lightning_checkpoint(folder / "good.ckpt", model).read_bytes()
    good = export_weights(folder, model, LENET, "good")
    files = {
        "empty.ckpt": b"",
        "notes.ckpt": b"epoch 3, acc 91 %\n",
        "truncated.ckpt": good_ckpt[: len(good_ckpt) // 2],
        "data.ckpt": gzip.compress(b"\0" * 100),
        "plain.ckpt": None,  # plain weights, no model name
        "pickled_model.ckpt": None,  # torch.save(model): code, not weights
        "truncated.safetensors": good.read_bytes()[:5000],
        "empty.safetensors": b"",
        "badjson.safetensors": good.read_bytes(),
        "nokwargs.safetensors": good.read_bytes(),
    }
    for name, data in files.items():
        if data is not None:
            (folder / name).write_bytes(data)
    torch.save(model.state_dict(), folder / "plain.ckpt")
    torch.save(model, folder / "pickled_model.ckpt")
    for name in ("truncated", "empty"):
        (folder / f"{name}.json").write_text(json.dumps(LENET))
    (folder / "badjson.json").write_text("{'model': lenet5")
    (folder / "nokwargs.json").write_text(json.dumps({"model": "lenet5"}))
    named = {"badjson.safetensors": "badjson.json", "nokwargs.safetensors": "nokwargs.json"}
    return {named.get(name, name): folder / name for name in files}


def test_damaged_or_foreign_files_are_one_line_errors_naming_them(tmp_path: Path) -> None:
    for named, path in _damaged_files(tmp_path).items():
        with pytest.raises(UserError) as err:
            model_from_checkpoint(path)
        message = str(err.value)
        assert named in message, message
        assert "\n" not in message and "weights_only" not in message, message
        assert "can still be loaded" not in message, message  # never advise an unsafe load
    with pytest.raises(UserError, match="is a directory"):
        model_from_checkpoint(tmp_path)


def test_weights_that_do_not_fit_their_own_config_are_refused(tmp_path: Path) -> None:
    """Nothing is adapted or re-initialised: a 100-class head or 3-channel stem under a config
    saying 10 classes and 1 channel is an error naming the keys, not a ~10 % evaluation."""
    wide_head = zoo.create_model("lenet5", num_classes=100, in_chans=1)
    with pytest.raises(UserError, match=r"fc\.weight \[100, 84\] in the file, \[10, 84\]"):
        model_from_checkpoint(export_weights(tmp_path / "head", wide_head, LENET))
    rgb = zoo.create_model("lenet5", num_classes=10, in_chans=3)
    with pytest.raises(UserError, match=r"\[6, 3, 5, 5\] in the file, \[6, 1, 5, 5\]"):
        model_from_checkpoint(export_weights(tmp_path / "rgb", rgb, LENET))
    state = zoo.create_model("lenet5", **LENET["model_kwargs"]).state_dict()
    del state["fc.bias"]
    ckpt = tmp_path / "partial.ckpt"
    hparams = {"model_name": "lenet5", "model_kwargs": LENET["model_kwargs"]}
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in state.items()}, "hyper_parameters": hparams},
        ckpt,
    )
    with pytest.raises(UserError, match=r"1 missing \[fc\.bias\]"):
        model_from_checkpoint(ckpt)
