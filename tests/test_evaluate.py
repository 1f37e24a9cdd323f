"""evaluate.py task=eval on a checkpoint trained here: same metrics as the trainer, files exist."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import SYNTHETIC_TINY, compose, run_train
from safetensors.torch import load_file, save_file

from zoo.evaluation.metrics import evaluate_model, worst_errors_figure
from zoo.tasks.eval import run

ROOT = Path(__file__).resolve().parents[1]
LENET_WEIGHTS = ROOT / "weights" / "lenet5_fmnist.safetensors"


def test_eval_task_matches_training_test_metrics(tmp_path: Path) -> None:
    results = run_train(
        tmp_path / "run",
        ["model=lenet5", "trainer.max_epochs=1", *SYNTHETIC_TINY, "data.image_size=28"],
    )
    ckpt = results["best_checkpoint"]
    cfg = compose(
        [
            f"ckpt_path={ckpt}",
            f"output_dir={tmp_path}",
            *SYNTHETIC_TINY[:-1],
            "data.image_size=28",
        ],
        "evaluate",
    )
    out = run(cfg)
    assert abs(out["acc1"] - results["test_acc1"]) < 1e-6
    assert abs(out["loss"] - results["test_loss"]) < 1e-4
    assert len(out["per_class"]["f1"]) == 10 and 0 <= out["ece"] <= 1
    assert sum(map(sum, out["confusion_matrix"])) == out["num_images"] == 32
    for name in ("eval.json", "confusion_matrix.png", "reliability.png", "worst_errors.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["acc1"] == out["acc1"]
    wrong = round((1 - out["acc1"]) * out["num_images"])
    assert len(saved["worst_errors"]) == min(16, wrong)  # task.worst_errors=16


def test_perfect_model_metrics() -> None:
    class Oracle(torch.nn.Module):
        def forward(self, x):
            return x[:, 0, 0, :3] * 100

    y = torch.tensor([0, 1, 2, 1])
    x = torch.nn.functional.one_hot(y, 3).float()[:, None, None, :].expand(4, 1, 2, 3)
    out = evaluate_model(Oracle(), [(x, y)], 3)
    assert out["acc1"] == 1.0 and out["per_class"]["f1"] == [1.0, 1.0, 1.0]
    assert out["ece"] < 1e-3


class LogitsInPixels(torch.nn.Module):
    """A 'model' whose logits are its input, so that every confidence is known in advance."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_worst_errors_are_the_most_confident_wrong_predictions() -> None:
    logits = torch.randn(23, 4) * 3
    y = torch.randint(0, 4, (23,))
    batches = [(logits[i : i + 5, None, None, :], y[i : i + 5]) for i in range(0, 23, 5)]
    out = evaluate_model(LogitsInPixels(), batches, 4, worst=6)
    probs = logits.softmax(1)
    wrong = [i for i in range(23) if probs[i].argmax() != y[i]]
    expected = sorted(wrong, key=lambda i: -probs[i].max().item())[:6]
    assert len(wrong) > 6  # the case really has to choose
    assert [e["index"] for e in out["worst_errors"]] == expected
    for error in out["worst_errors"]:
        i = error["index"]
        assert error["true"] == y[i] and error["pred"] == probs[i].argmax() != y[i]
        assert error["confidence"] == pytest.approx(probs[i].max().item(), rel=1e-5)


def test_worst_errors_figure_shows_those_images_with_class_names() -> None:
    images = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.uint8)
    errors = [
        {"index": 3, "true": 0, "pred": 2, "confidence": 0.97},
        {"index": 1, "true": 1, "pred": 0, "confidence": 0.6},
    ]
    fig = worst_errors_figure(images, errors, ["cat", "dog", "ship"])
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == [
        "true: cat\npred: ship (97%)",
        "true: dog\npred: cat (60%)",
    ]
    for ax, error in zip(shown, errors, strict=True):
        assert (ax.images[0].get_array() == images[error["index"]].permute(1, 2, 0).numpy()).all()
    grey = worst_errors_figure(images[:, :1], errors[:1])  # no names: the label numbers
    assert [ax.get_title() for ax in grey.axes if ax.images] == ["true: 0\npred: 2 (97%)"]


def test_eval_without_checkpoint_is_one_line_error() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "evaluate.py"),
            "task=eval",
            "hydra.run.dir=/tmp/zoo-eval-test",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "needs ckpt_path" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    unused = compose(["model=lenet5"])  # the train config still composes beside evaluate
    assert unused.model.name == "lenet5"


def _evaluate_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), *overrides, f"hydra.run.dir={tmp_path}/out"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _head_mismatch(tmp_path: Path) -> tuple[list[str], str]:
    """Shipped LeNet-5 weights with a 100-class head under their own 10-class JSON."""
    tensors = load_file(str(LENET_WEIGHTS))
    tensors["fc.weight"], tensors["fc.bias"] = torch.zeros(100, 84), torch.zeros(100)
    save_file(tensors, str(tmp_path / "wide.safetensors"))
    shutil.copy(LENET_WEIGHTS.with_suffix(".json"), tmp_path / "wide.json")
    return [f"ckpt_path={tmp_path}/wide.safetensors", "data=mnist", "data.root=/none"], "fc.weight"


def _damaged_data(tmp_path: Path) -> tuple[list[str], str]:
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / f"{stem}.gz").write_bytes(gzip.compress(b"\0\0\x08\x01" + bytes(4)))
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\0\0\x08\x03 raw bytes, not gzip")
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    return [f"ckpt_path={LENET_WEIGHTS}", "data=mnist", f"data.root={tmp_path}"], str(bad)


def _text_checkpoint(tmp_path: Path) -> tuple[list[str], str]:
    (tmp_path / "notes.ckpt").write_text("best epoch: 7\n")
    return [f"ckpt_path={tmp_path}/notes.ckpt"], "notes.ckpt is not a PyTorch checkpoint"


CLI_MISTAKES = {
    "damaged-data-file": _damaged_data,
    "wrong-data-root": lambda tmp: (
        [f"ckpt_path={LENET_WEIGHTS}", f"data.root={tmp}/nowhere"],
        f"data.root={tmp}/nowhere does not hold",
    ),
    "text-checkpoint": _text_checkpoint,
    "in-chans-mismatch": lambda tmp: (
        [f"ckpt_path={LENET_WEIGHTS}", "data=synthetic", "data.image_size=28"],
        "takes 1-channel images but data=synthetic has 3 channels",
    ),
    "head-does-not-fit-its-json": _head_mismatch,
}


@pytest.mark.parametrize("mistake", sorted(CLI_MISTAKES))
def test_user_mistake_is_one_line_error_with_exit_2(tmp_path: Path, mistake: str) -> None:
    overrides, named = CLI_MISTAKES[mistake](tmp_path)
    proc = _evaluate_cli(tmp_path, "task=eval", *overrides)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error: ") and named in lines[0], lines[0]
    assert not (tmp_path / "out" / "eval.json").exists()
