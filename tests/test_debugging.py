"""The debugging aids of Goodfellow et al. (2016, §11.5): fitting a tiny data set, the gradient
check and activation/gradient statistics, each on models that work and on models built broken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import SYNTHETIC_TINY, cli, compose, one_line_error, run_train
from torch import nn

import zoo.training.module as module_file
from zoo.errors import UserError
from zoo.training.debug import set_dropout

# debug=overfit on the tiny synthetic set: 64 training images, 4 batches of 16 (the learning rate
# scaled down from the recipe's 0.1 at batch 128, which diverges at batch 16).
OVERFIT = [
    *SYNTHETIC_TINY,
    "threads=1",
    "debug=overfit",
    "data.batch_size=16",
    "data.train_subset=64",
    "optim.lr=0.02",
]


class IgnoresItsInput(nn.Module):
    """Logits that do not depend on the image: a learnt constant per class."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.repeat(len(x), 1)


def _verdict(out: Path) -> dict:
    return json.loads((out / "overfit.json").read_text())


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("lenet5", ["data.in_chans=1", "data.image_size=28"]),
        ("resnet20", ["data.image_size=16"]),
    ],
)
def test_overfit_passes_for_models_that_can_learn(tmp_path, capsys, model, extra) -> None:
    run_train(tmp_path, [*OVERFIT, f"model={model}", "trainer.max_epochs=100", *extra])
    verdict = _verdict(tmp_path)
    assert verdict["passed"], verdict["history"][-3:]
    assert verdict["final_loss"] < 0.01 and verdict["final_acc1"] == 1.0
    assert verdict["batches"] == 4 and verdict["images"] == 64
    assert verdict["epochs"] == verdict["passed_epoch"] < 100  # stopped when it passed
    assert "overfit PASS" in capsys.readouterr().out


def test_overfit_fails_for_a_model_that_ignores_its_input(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(
        module_file, "create_model", lambda name, pretrained=False, **kw: IgnoresItsInput(10)
    )
    run_train(tmp_path, [*OVERFIT, "trainer.max_epochs=30"])
    verdict = _verdict(tmp_path)
    assert not verdict["passed"] and verdict["epochs"] == 30
    # The best a constant can do is the entropy of the labels (10 classes, ~ln 10).
    assert verdict["best_loss"] > 1.5 and verdict["final_acc1"] < 0.5
    assert "overfit FAIL" in capsys.readouterr().out


def test_overfit_config_turns_regularisation_and_augmentation_off() -> None:
    cfg = compose(["debug=overfit", "model=cliquenet_k36_t12_ac", "data.crop_padding=4"])
    assert cfg.trainer.overfit_batches == 4
    assert cfg.data.train_subset == cfg.trainer.overfit_batches * cfg.data.batch_size
    assert cfg.optim.weight_decay == 0 and cfg.train.label_smoothing == 0
    assert cfg.data.crop_padding == 4  # the command line still wins over the debug config
    assert compose(["debug=overfit"]).data.crop_padding == 0
    assert not compose(["debug=overfit"]).data.hflip
    kwargs = {"num_classes": 10, "drop_rate": cfg.model.drop_rate}
    assert set_dropout(cfg.model.name, kwargs, cfg.train.dropout)["drop_rate"] == 0.0
    # Models without a dropout option are built as they are.
    assert set_dropout("resnet20", {"num_classes": 10}, 0.0) == {"num_classes": 10}
    vgg = set_dropout("googlenet_cifar", {}, 0.0)
    assert vgg == {"dropout": 0.0, "dropout_aux": 0.0}


def test_overfit_batches_that_would_not_be_fixed_are_a_one_line_error(tmp_path: Path) -> None:
    proc = cli(
        "train.py",
        [*OVERFIT, "data.num_samples=160", "data.train_subset=null", f"hydra.run.dir={tmp_path}"],
    )
    line = one_line_error(proc)
    assert "would not be fixed" in line and "data.train_subset=64" in line


def test_dropout_probability_is_checked() -> None:
    with pytest.raises(UserError, match="train.dropout"):
        set_dropout("alexnet_cifar", {}, 1.5)
