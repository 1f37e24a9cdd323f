"""The debugging aids of Goodfellow et al. (2016, §11.5): fitting a tiny data set, the gradient
check and activation/gradient statistics, each on models that work and on models built broken."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import SYNTHETIC_TINY, cli, compose, one_line_error, run_train
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import zoo.training.module as module_file
from zoo.errors import UserError
from zoo.evaluation.gradcheck import build_float64_model, check_gradients
from zoo.models.registry import get_model_entry
from zoo.tasks.gradcheck import model_from_config
from zoo.training.activation_stats import ActivationStats
from zoo.training.debug import set_dropout
from zoo.weights.factory import list_models

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


# --- gradient check ------------------------------------------------------------------------------


class ScaledBackwardLinear(torch.autograd.Function):
    """``x @ w.T + b`` whose backward multiplies every gradient by ``factor`` (1: correct)."""

    @staticmethod
    def forward(ctx, x, weight, bias, factor: float):
        ctx.save_for_backward(x, weight)
        ctx.factor = factor
        return x @ weight.T + bias

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        k = ctx.factor
        return k * grad @ weight, k * grad.T @ x, k * grad.sum(0), None


class CustomLinear(nn.Linear):
    def __init__(self, n_in: int, n_out: int, factor: float) -> None:
        super().__init__(n_in, n_out)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ScaledBackwardLinear.apply(x, self.weight, self.bias, self.factor)


def _mlp(factor: float) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(6, 5), nn.Tanh(), CustomLinear(5, 4, factor), nn.Tanh(), nn.Linear(4, 3)]
    return nn.Sequential(*layers).double()


def test_gradcheck_finds_a_backward_off_by_a_factor() -> None:
    x = torch.randn(3, 6, dtype=torch.float64)
    report = check_gradients(_mlp(1.5), x, samples=6)
    rows = {r["module"]: r for r in report["modules"]}
    assert not report["passed"] and not report["torch_gradcheck"]["passed"]
    assert report["suspect"] == "2"
    # autograd = 1.5 x the truth in the broken layer and everything before it: |1.5 - 1| / 1.5.
    for name in ("(input)", "0", "2"):
        assert not rows[name]["passed"]
        assert rows[name]["worst_rel_error"] == pytest.approx(1 / 3, rel=1e-4)
    assert rows["4"]["passed"] and rows["4"]["worst_rel_error"] < 1e-6  # after it: right


def test_a_failing_torch_gradcheck_stops_before_its_full_jacobian_slow_mode() -> None:
    """torch describes a fast-mode failure with a numerical Jacobian: 2 forward passes per
    parameter (here 2 x 74, for odenet_mnist 2 x 208k through its 1,000-step grid)."""
    from zoo.evaluation.gradcheck import FAST_MODE_CALLS, _torch_gradcheck

    model, calls = _mlp(1.5), []
    model.register_forward_hook(lambda *_: calls.append(1))
    x, weights = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    passed, message = _torch_gradcheck(model, x, weights, (1e-6, 1e-5, 1e-3))
    assert not passed and "fast mode" in message
    assert len(calls) == FAST_MODE_CALLS  # the next evaluation stops before the model runs
    calls.clear()
    assert _torch_gradcheck(_mlp(1.0), x, weights, (1e-6, 1e-5, 1e-3)) == (True, "passed")
    assert len(calls) < FAST_MODE_CALLS


class _KinkedNet(nn.Module):
    """ReLU and max-pool, then three outputs scaled by a parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(x), 2).sum(dim=(1, 2, 3)).unsqueeze(1) * self.scale


def test_frozen_activation_pattern_keeps_the_value_and_removes_the_kinks() -> None:
    from zoo.evaluation.gradcheck import freeze_activation_pattern

    x = torch.tensor([[[[3e-7, 1.0], [1.0 + 2e-7, -4e-7]]]], dtype=torch.float64)
    f = lambda: _KinkedNet()(x).sum()  # noqa: E731
    frozen = freeze_activation_pattern(f)
    assert frozen().item() == f().item()
    x[0, 0, 1, 0] -= 1e-6  # across the max-pool tie: the frozen pool keeps its argmax
    assert frozen().item() == pytest.approx(3 * (1.0 + 2e-7 - 1e-6), rel=1e-12)
    assert f().item() == 3.0
    report = check_gradients(_KinkedNet(), x.detach() + 0, samples=4)
    rows = {r["module"]: r for r in report["modules"]}
    assert report["passed"] and rows["(input)"]["remeasured"] >= 1  # plain differences failed


def test_gradcheck_passes_the_same_function_with_its_correct_backward() -> None:
    x = torch.randn(3, 6, dtype=torch.float64)
    report = check_gradients(_mlp(1.0), x, samples=6)
    assert report["passed"] and report["torch_gradcheck"]["passed"] and report["suspect"] is None
    assert max(r["worst_rel_error"] for r in report["modules"]) < 1e-6


@pytest.mark.parametrize(("model", "size"), [("lenet5", None), ("resnet20", 8)])
def test_gradcheck_passes_for_zoo_models(model: str, size: int | None) -> None:
    cfg = compose([f"model={model}", "task=gradcheck"], "evaluate")
    net = build_float64_model(*model_from_config(cfg.model), cfg.task.ode_solver, cfg.task.ode_step)
    assert net.training and all(p.dtype == torch.float64 for p in net.parameters())
    c, h, _ = get_model_entry(model).cfg.input_size
    x = torch.randn(2, c, size or h, size or h, dtype=torch.float64)
    report = check_gradients(net, x, samples=2)
    assert report["passed"], [r for r in report["modules"] if not r["passed"]]


def test_gradcheck_command_prints_and_writes_the_report(tmp_path: Path) -> None:
    proc = cli(
        "evaluate.py",
        ["task=gradcheck", "model=resnet20", "task.image_size=8", "task.samples=1",
         f"hydra.run.dir={tmp_path}"],
    )  # fmt: skip
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    report = json.loads((tmp_path / "gradcheck.json").read_text())
    assert report["passed"] and report["input_shape"] == [2, 3, 8, 8]
    assert report["dtype"] == "float64"
    assert {r["module"] for r in report["modules"]} >= {"(input)", "conv1", "bn1", "fc"}
    assert "gradcheck PASS" in out and "| layer1.0.conv1 | Conv2d |" in out


def test_gradcheck_on_an_input_too_small_is_a_one_line_error(tmp_path: Path) -> None:
    proc = cli(
        "evaluate.py",
        ["task=gradcheck", "model=resnet20", "task.image_size=1", "task.batch_size=1",
         f"hydra.run.dir={tmp_path}"],
    )  # fmt: skip
    line = one_line_error(proc)
    assert "resnet20 cannot run on a [1, 3, 1, 1] input" in line and "task.image_size" in line


SMALL_INPUT_MODELS = [
    name for name in list_models() if get_model_entry(name).cfg.input_size[1] <= 32
]


# odenet_mnist at 8x8 reaches the ODE block with 2x2 maps: gradients of order 1e5-1e6, where
# centred differences at eps = 1e-6 disagree even with direct backpropagation through the same
# rk4 grid (step 0.05: 6.9e4 against 2.0e5 along one direction); it is checked at its own 28x28.
# vgg16/19_bn_cifar at 8x8 end in 1x1 maps where train-mode BatchNorm sees two values a channel;
# rknet_mnist has odenet_mnist's 2x2 maps. All three pass at their own size.
OWN_SIZE_ONLY = {"odenet_mnist", "rknet_mnist", "vgg16_bn_cifar", "vgg19_bn_cifar"}


def _smallest_input(net: nn.Module, chans: int, sizes: tuple[int, ...] = (8, 16, 32)):
    """A batch of two at the smallest of ``sizes`` pixels the model runs on."""
    for size in sizes:
        x = torch.randn(2, chans, size, size, generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                net(x.double())
            return x.double()
        except (RuntimeError, ValueError):
            continue
    raise AssertionError(f"no input size of {sizes} fits")


@pytest.mark.slow
@pytest.mark.parametrize("model", SMALL_INPUT_MODELS)
def test_gradcheck_passes_for_every_small_input_model(model: str) -> None:
    cfg = compose([f"model={model}", "task=gradcheck"], "evaluate")
    net = build_float64_model(*model_from_config(cfg.model), cfg.task.ode_solver, cfg.task.ode_step)
    c, h, _ = get_model_entry(model).cfg.input_size
    x = _smallest_input(net, c, (h,) if model in OWN_SIZE_ONLY else (8, 16, 32))
    report = check_gradients(net, x, samples=2, eps=float(cfg.task.eps))
    assert report["passed"], [r for r in report["modules"] if not r["passed"]]


# --- activation and gradient statistics ----------------------------------------------------------


def _units_built_dead(num_classes: int) -> nn.Module:
    """3 of 8 ReLU units dead (bias -1000: never positive, so never a gradient to revive them), 2 of
    6 tanh units saturated (bias +50)."""
    torch.manual_seed(0)
    first, second = nn.Linear(28 * 28, 8), nn.Linear(8, 6)
    with torch.no_grad():
        first.bias[:3], first.bias[3:] = -1000.0, 2.0
        second.bias[:2], second.bias[2:] = 50.0, 0.0
    net = nn.Sequential(nn.Flatten(), first, nn.ReLU(), second, nn.Tanh())
    net.append(nn.Linear(6, num_classes))
    net.num_classes = num_classes  # as every zoo model: the classifier sizes its metrics by it
    return net


def test_stats_count_the_dead_and_saturated_units_of_a_model_built_so(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(
        module_file,
        "create_model",
        lambda name, pretrained=False, num_classes=10, **kw: _units_built_dead(num_classes),
    )
    run_train(
        tmp_path,
        [*SYNTHETIC_TINY, "threads=1", "data.in_chans=1", "data.image_size=28", "optim.lr=0.01",
         "trainer.max_epochs=3", "callbacks.stats=true",
         "callbacks.activation_stats.every_n_steps=2", "logger=tensorboard"],
    )  # fmt: skip
    report = json.loads((tmp_path / "activation_stats.json").read_text())
    assert report["logged_steps"] == 6  # steps 0, 2, ..., 10 of 12
    sites = {s["site"]: s for s in report["sites"]}
    assert set(sites) == {"2", "4"}  # the ReLU and the tanh modules of the Sequential
    assert sites["2"]["function"] == "relu" and sites["2"]["units"] == 8
    assert sites["2"]["dead_fraction"] == 3 / 8
    assert sites["4"]["function"] == "tanh" and sites["4"]["dead_fraction"] is None
    assert sites["4"]["saturated_fraction"] == 2 / 6
    assert report["sites"][0]["site"] == "2"  # the worst first
    printed = capsys.readouterr().out
    assert "| 2 | relu | 8 | 37.5 % | 37.5 % |" in printed
    assert (tmp_path / "activation_stats.md").read_text().count("| relu |") == 1
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"histograms": 0})
    events.Reload()
    histograms = events.Tags()["histograms"]
    assert {"preactivation/2", "preactivation/4", "gradient/1.weight", "gradient/5.bias"} <= set(
        histograms
    )
    assert [e.step for e in events.Histograms("preactivation/2")] == [0, 2, 4, 6, 8, 10]
    # The dead units' pre-activations: all far below zero in every logged histogram.
    dead = events.Histograms("preactivation/2")[-1].histogram_value
    assert dead.min < -900


def test_stats_name_each_use_of_a_reused_relu_and_functional_calls(tmp_path: Path) -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.relu = nn.ReLU()

        def forward(self, x):
            return torch.sigmoid(self.relu(self.relu(self.conv(x)) - 50))

    net = nn.Sequential(Block(), Block())
    stats = ActivationStats(tmp_path, every_n_steps=1)
    stats.on_fit_start(None, net)
    stats._start(net)
    net(torch.randn(4, 2, 3, 3))
    stats._stop()
    assert set(stats.sites) == {
        "0.relu", "0.relu#2", "0/sigmoid", "1.relu", "1.relu#2", "1/sigmoid"
    }  # fmt: skip
    assert stats.sites["0.relu#2"].summary()["dead_fraction"] == 1.0  # relu(...) - 50 < 0
    assert stats.sites["1/sigmoid"].summary()["saturated_fraction"] == 0.0  # sigmoid(0)
