"""The export command: a Lightning checkpoint to safetensors + JSON, and its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo
from zoo.errors import UserError
from zoo.pretrained import model_from_checkpoint
from zoo.tools.export import main

ROOT = Path(__file__).resolve().parents[1]


def _lightning_ckpt(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    from zoo.training import ZooClassifier

    module = ZooClassifier(
        "resnet20",
        {"num_classes": 7, "in_chans": 1, "shortcut": "A"},
        data={"name": "synthetic", "mean": [0.5], "std": [0.25]},
    )
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "best.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    (run / "results.json").write_text(json.dumps({"test_acc1": 0.5, "epochs": 1, "other": 3}))
    return ckpt, module.model.eval()


def test_export_cli_writes_weights_and_config(tmp_path: Path, capsys) -> None:
    ckpt, ref = _lightning_ckpt(tmp_path)
    out = tmp_path / "out" / "r20.safetensors"
    main([str(ckpt), str(out), "--command", "python train.py model=resnet20"])
    assert "wrote" in capsys.readouterr().out
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["model"] == "resnet20" and meta["model_kwargs"]["shortcut"] == "A"
    assert meta["data"]["mean"] == [0.5] and meta["metrics"] == {"test_acc1": 0.5, "epochs": 1}
    assert meta["command"] == "python train.py model=resnet20"
    assert not list(out.parent.glob(".*tmp"))  # atomic writes leave no temp files
    x = torch.randn(2, 1, 28, 28)
    model, info = model_from_checkpoint(out)
    direct = zoo.create_model(
        "resnet20", shortcut="A", in_chans=1, num_classes=7, pretrained=str(out)
    )
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), ref(x), atol=1e-6)
        assert torch.allclose(direct.eval()(x), ref(x), atol=1e-6)


def test_safetensors_without_its_json_is_a_clear_error(tmp_path: Path) -> None:
    ckpt, _ = _lightning_ckpt(tmp_path)
    out = tmp_path / "r20.safetensors"
    main([str(ckpt), str(out)])
    out.with_suffix(".json").unlink()
    with pytest.raises(UserError, match="r20.safetensors needs its model config r20.json"):
        model_from_checkpoint(out)


def test_plain_weights_are_not_a_training_checkpoint(tmp_path: Path) -> None:
    torch.save(zoo.create_model("lenet5").state_dict(), tmp_path / "plain.pth")
    with pytest.raises(UserError, match="not a zoo training checkpoint"):
        model_from_checkpoint(tmp_path / "plain.pth")


def test_missing_checkpoint_one_line_exit_2(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing.ckpt"), str(tmp_path / "o.safetensors")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "missing.ckpt does not exist" in err
    assert len(err.strip().splitlines()) == 1


def test_export_command_bad_output_one_line_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.tools.export", "run.ckpt", "o.pth"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2 and "must end in .safetensors, not o.pth" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
