"""evaluate.py task=eval on a checkpoint trained here: same metrics as the trainer, files exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import hydra
import torch
from test_train import SYNTHETIC_TINY, compose, run_train

from zoo.cli import CONF_DIR
from zoo.evaluation.metrics import evaluate_model, run

ROOT = Path(__file__).resolve().parents[1]


def test_eval_task_matches_training_test_metrics(tmp_path: Path) -> None:
    results = run_train(
        tmp_path / "run",
        ["model=lenet5", "trainer.max_epochs=1", *SYNTHETIC_TINY, "data.image_size=28"],
    )
    ckpt = results["best_checkpoint"]
    with hydra.initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = hydra.compose(
            "evaluate",
            overrides=[
                f"ckpt_path={ckpt}",
                f"output_dir={tmp_path}",
                *SYNTHETIC_TINY[:-1],
                "data.image_size=28",
            ],
        )
    out = run(cfg)
    assert abs(out["acc1"] - results["test_acc1"]) < 1e-6
    assert abs(out["loss"] - results["test_loss"]) < 1e-4
    assert len(out["per_class"]["f1"]) == 10 and 0 <= out["ece"] <= 1
    assert sum(map(sum, out["confusion_matrix"])) == out["num_images"] == 32
    for name in ("eval.json", "confusion_matrix.png", "reliability.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "eval.json").read_text())["acc1"] == out["acc1"]


def test_perfect_model_metrics() -> None:
    class Oracle(torch.nn.Module):
        def forward(self, x):
            return x[:, 0, 0, :3] * 100

    y = torch.tensor([0, 1, 2, 1])
    x = torch.nn.functional.one_hot(y, 3).float()[:, None, None, :].expand(4, 1, 2, 3)
    out = evaluate_model(Oracle(), [(x, y)], 3)
    assert out["acc1"] == 1.0 and out["per_class"]["f1"] == [1.0, 1.0, 1.0]
    assert out["ece"] < 1e-3


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
