"""The export command: weights to safetensors + JSON, the network to ONNX and TorchScript."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from helpers import one_line_error
from helpers.models import SMALL_MODELS, trained_like

import zoo
from zoo.errors import UserError
from zoo.models.registry import get_model_entry
from zoo.tools.export import FORMATS, export_network, main
from zoo.weights.checkpoint import model_from_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _export_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    """``python -m zoo.tools.export ARGS`` in a subprocess (one thread, text pipes)."""
    return subprocess.Popen(
        [sys.executable, "-m", "zoo.tools.export", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )


def _lightning_ckpt(
    tmp_path: Path, name: str = "resnet20", kwargs: dict | None = None, size=(1, 32, 32)
) -> tuple[Path, torch.nn.Module]:
    """A checkpoint as train.py writes it (a trained-like model for ``size`` inputs), its model."""
    from zoo.training import ZooClassifier

    module = ZooClassifier(
        name,
        kwargs or {"num_classes": 7, "in_chans": 1, "shortcut": "A"},
        data={"name": "synthetic", "mean": [0.5], "std": [0.25]},
    )
    trained_like(module.model, size)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    ckpt = run / "checkpoints" / f"{name}.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    pieces = [{"command": "python train.py model=resnet20", "from_step": 0, "to_step": 9}]
    results = {"test_acc1": 0.5, "epochs": 1, "other": 3, "pieces": pieces}
    (run / "results.json").write_text(json.dumps(results))
    return ckpt, module.model.eval()


def test_export_cli_writes_weights_and_config(tmp_path: Path, capsys) -> None:
    ckpt, ref = _lightning_ckpt(tmp_path)
    out = tmp_path / "out" / "r20.safetensors"
    out.parent.mkdir()
    main([str(ckpt), str(out), "--command", "python train.py model=resnet20"])
    assert "wrote" in capsys.readouterr().out
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["model"] == "resnet20" and meta["model_kwargs"]["shortcut"] == "A"
    assert meta["data"]["mean"] == [0.5] and meta["metrics"] == {"test_acc1": 0.5, "epochs": 1}
    assert meta["command"] == "python train.py model=resnet20"
    assert meta["pieces"] == [{"command": meta["command"], "from_step": 0, "to_step": 9}]
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


@pytest.mark.parametrize("extra", [[], ["--onnx"]], ids=["weights", "network"])
def test_export_creates_no_folders(tmp_path: Path, capsys, extra: list[str]) -> None:
    ckpt, _ = _lightning_ckpt(tmp_path)
    suffix = ".onnx" if extra else ".safetensors"
    out = tmp_path / "typo" / "deeper" / f"r20{suffix}"
    with pytest.raises(SystemExit) as exit_info:
        main([str(ckpt), str(out), *extra])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert f"{out.parent} does not exist: create it first" in err
    assert not (tmp_path / "typo").exists()


def test_export_command_bad_output_one_line_exit_2(tmp_path: Path) -> None:
    line = one_line_error(_export_cli(["run.ckpt", "o.pth"], tmp_path))
    assert "must end in .safetensors, not o.pth" in line


# ---- the network: ONNX and TorchScript --------------------------------------------------------

# The torch.export-based ONNX exporter takes 10-30 s on these (GoogLeNet's 9 Inception modules,
# DenseNet-BC's 48 layers, CliqueNet's 3 recurrent blocks) on one core: under `make test-slow`.
HEAVY_FOR_ONNX = {"googlenet_cifar", "densenet_bc100_k12", "cliquenet_k36_t12_ac"}


def _run_file(path: Path, x: torch.Tensor) -> torch.Tensor:
    """Run an exported file as its users would: ONNX Runtime, or torch.jit.load."""
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated")
        return torch.jit.load(str(path))(x)


def _metadata(path: Path) -> dict[str, str]:
    if path.suffix == ".onnx":
        import onnxruntime

        return onnxruntime.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
    files = {"zoo.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated")
        torch.jit.load(str(path), _extra_files=files)
    return json.loads(files["zoo.json"])


def _assert_matches(path: Path, model: torch.nn.Module, size: tuple[int, ...]) -> None:
    """The file's output equals PyTorch's (eval mode) to 1e-4 at batch sizes 1 and 4 (the model
    was exported at batch 2: the batch axis is dynamic)."""
    for batch in (1, 4):
        x = torch.randn(batch, *size)
        with torch.no_grad():
            expected = model(x)
        got = _run_file(path, x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_small_models_cover_every_family() -> None:
    families = {get_model_entry(n).family for n in zoo.list_models()}
    assert {get_model_entry(n).family for n in SMALL_MODELS} == families


@pytest.mark.parametrize(
    "name,fmt",
    [
        pytest.param(n, f, marks=[pytest.mark.slow] if f == "onnx" and n in HEAVY_FOR_ONNX else [])
        for f in ("onnx", "torchscript")
        for n in SMALL_MODELS
    ],
)
def test_every_family_exports_and_matches_pytorch(tmp_path: Path, name: str, fmt: str) -> None:
    size = get_model_entry(name).cfg.input_size
    model = trained_like(zoo.create_model(name), size)
    out = tmp_path / f"{name}{FORMATS[fmt]}"
    info = {"model": name, "model_kwargs": {}, "data": {}}
    done = export_network(model, info, out, fmt)
    assert done["input_size"] == size and done["max_abs_diff"] is not None  # checked before
    _assert_matches(out, model, size)
    assert _metadata(out)["model"] == name


def test_checkpoint_to_onnx_and_torchscript_carries_its_data(tmp_path: Path, capsys) -> None:
    ckpt, ref = _lightning_ckpt(tmp_path)  # resnet20, 1 channel, 7 classes, mean 0.5 / std 0.25
    weights = tmp_path / "r20.safetensors"
    main([str(ckpt), str(weights)])
    for source, out in ((ckpt, tmp_path / "r20.onnx"), (weights, tmp_path / "r20.pt")):
        main([str(source), str(out), "--onnx" if out.suffix == ".onnx" else "--torchscript"])
        printed = capsys.readouterr().out
        assert f"wrote {out} (resnet20, input Nx1x32x32" in printed and "matches PyTorch" in printed
        _assert_matches(out, ref, (1, 32, 32))
        meta = _metadata(out)
        assert json.loads(meta["mean"]) == [0.5] and json.loads(meta["std"]) == [0.25]
        assert json.loads(meta["model_kwargs"])["num_classes"] == 7


def test_model_name_with_pretrained_tag_exports_at_the_tags_size(tmp_path: Path) -> None:
    out = tmp_path / "lenet5.onnx"
    main(["lenet5", str(out), "--onnx", "--pretrained", "fmnist"])
    model = zoo.create_model("lenet5", pretrained="fmnist").eval()
    _assert_matches(out, model, (1, 28, 28))  # Fashion-MNIST's size, not LeNet-5's 32x32
    tag = zoo.weights.pretrained.get_tag("lenet5", "fmnist")
    assert json.loads(_metadata(out)["mean"]) == list(tag.mean)


def test_adaptive_ode_net_says_what_to_use_instead(tmp_path: Path, capsys) -> None:
    line = one_line_error(_export_cli(["odenet_mnist", "o.onnx", "--onnx"], tmp_path))
    assert "adaptive solver dopri5" in line and "--set solver=rk4 step_size=0.25" in line
    assert "rknet_mnist" in line and not (tmp_path / "o.onnx").exists()
    with pytest.raises(SystemExit) as exit_info:  # TorchScript: the same refusal
        main(["odenet_mnist", str(tmp_path / "o.pt"), "--torchscript"])
    assert exit_info.value.code == 2 and "adaptive solver dopri5" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()


def test_ode_net_weights_export_with_a_fixed_step_solver(tmp_path: Path) -> None:
    """The fix the refusal names: the same weights, integrated by RK4 (RK-Net's solver)."""
    kwargs = {"num_classes": 10, "in_chans": 1}
    ckpt, model = _lightning_ckpt(tmp_path, "odenet_mnist", kwargs, (1, 28, 28))
    out = tmp_path / "ode.onnx"
    main([str(ckpt), str(out), "--onnx", "--set", "solver=rk4", "step_size=0.25"])
    rknet = zoo.create_model("rknet_mnist")
    rknet.load_state_dict(model.state_dict())
    _assert_matches(out, rknet.eval(), (1, 28, 28))
    assert json.loads(_metadata(out)["model_kwargs"])["solver"] == "rk4"


def test_exporter_failure_is_one_user_error(tmp_path: Path) -> None:
    class DataDependent(torch.nn.Module):  # a branch on a tensor's value: no static graph
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum() > 0 else x - 1

    info = {"model": "data_dependent", "model_kwargs": {}, "data": {}}
    with pytest.raises(UserError, match="data_dependent cannot be exported to ONNX: ") as err:
        export_network(DataDependent(), info, tmp_path / "d.onnx", "onnx", (1, 4, 4))
    assert "\n" not in str(err.value) and not (tmp_path / "d.onnx").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["resnet20", "o.pt", "--onnx"], "--onnx writes a .onnx file, not o.pt"),
        (["resnet20", "o.onnx", "--torchscript"], "--torchscript writes a .pt file, not o.onnx"),
        (["resnt20", "o.onnx", "--onnx"], "resnt20 is neither a file nor a registered model"),
        (["resnet20", "o.onnx", "--onnx", "--set", "shortcut"], "--set takes KEY=VALUE pairs"),
        (["resnet20", "o.onnx", "--onnx", "--set", "depth=3"], "unexpected argument(s) 'depth'"),
        (["resnet20", "o.safetensors"], "resnet20 is a model name: a model exports with --onnx"),
        (["run.ckpt", "o.onnx", "--onnx", "--pretrained", "x"], "--pretrained is for a model name"),
    ],
)
def test_export_mistakes_are_one_line(
    tmp_path: Path, monkeypatch, capsys, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
