"""Knowledge distillation (Hinton et al. 2015): the loss, its T² scaling, a frozen teacher that
stays out of the student's checkpoints, and distillation runs through the trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import SYNTHETIC_TINY, cli, compose, one_line_error, run_train
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch import nn

import zoo.tasks.train as train_task
from zoo.errors import UserError
from zoo.training.distill import Teacher, check_distill, kd_loss, load_teacher
from zoo.weights.checkpoint import read_checkpoint
from zoo.weights.factory import create_model

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "resnet20_fmnist.safetensors"
# Synthetic data the published Fashion-MNIST teacher can read: 1 channel, 28x28, 10 classes.
TEACHER_DATA = [*SYNTHETIC_TINY, "data.in_chans=1", "data.image_size=28", "trainer=debug"]
DISTILL = "train.distill={teacher:resnet20:fmnist,temperature:4,alpha:0.9}"


def _logits(n: int = 8, k: int = 10, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (
        3 * torch.randn(n, k, generator=g, dtype=torch.float64),
        3 * torch.randn(n, k, generator=g, dtype=torch.float64),
        torch.randint(0, k, (n,), generator=g),
    )


@pytest.mark.parametrize(("temperature", "alpha", "smoothing"), [(4, 0.9, 0.0), (2, 0.5, 0.1)])
def test_kd_loss_matches_a_direct_computation(temperature, alpha, smoothing) -> None:
    s, t, y = _logits()
    n, k = s.shape
    log_q = (s / temperature).log_softmax(1)
    p = (t / temperature).softmax(1)
    kl = (p * (p.log() - log_q)).sum() / n
    nll = -s.log_softmax(1)
    ce = ((1 - smoothing) * nll[torch.arange(n), y] + smoothing * nll.mean(1)).mean()
    expected = (1 - alpha) * ce + alpha * temperature**2 * kl
    got = kd_loss(s, t, y, temperature, alpha, label_smoothing=smoothing)
    torch.testing.assert_close(got, expected)


def test_label_smoothing_touches_the_cross_entropy_term_only() -> None:
    s, t, y = _logits()
    soft_only = kd_loss(s, t, y, 4.0, 1.0, label_smoothing=0.0)
    assert kd_loss(s, t, y, 4.0, 1.0, label_smoothing=0.3) == pytest.approx(soft_only.item())
    hard = kd_loss(s, t, y, 4.0, 0.0, label_smoothing=0.3)
    assert hard == pytest.approx(F.cross_entropy(s, y, label_smoothing=0.3).item())


def test_t_squared_keeps_the_soft_gradient_at_the_logit_matching_limit() -> None:
    # Hinton et al. §2.1: for large T the gradient of T²·KL w.r.t. a student logit tends to
    # ((s_i - mean s) - (t_i - mean t)) / K (per example): independent of T. Without T² it would
    # fall as 1/T².
    s, t, y = _logits(k=10)
    n, k = s.shape
    limit = ((s - s.mean(1, keepdim=True)) - (t - t.mean(1, keepdim=True))) / (k * n)
    for temperature, rtol in ((100.0, 0.05), (1000.0, 0.005)):  # the gap closes as 1/T
        student = s.clone().requires_grad_()
        kd_loss(student, t, y, temperature, 1.0).backward()
        assert (student.grad - limit).norm() < rtol * limit.norm()
    # At T = 1 the same gradient is (softmax(s) - softmax(t)) / n: the factor T² is exactly 1.
    student = s.clone().requires_grad_()
    kd_loss(student, t, y, 1.0, 1.0).backward()
    torch.testing.assert_close(student.grad, (s.softmax(1) - t.softmax(1)) / n)


def test_distill_config_values_are_checked() -> None:
    assert check_distill(None) is None
    assert check_distill({"teacher": "x.ckpt"}) == {
        "teacher": "x.ckpt",
        "temperature": 4.0,
        "alpha": 0.9,
    }
    for bad, word in [
        ({"teacher": "x", "alpha": 1.5}, "alpha"),
        ({"teacher": "x", "temperature": 0}, "temperature"),
        ({"teacher": "x", "temp": 2}, "unknown keys"),
        ({"temperature": 2}, "needs teacher"),
    ]:
        with pytest.raises(UserError, match=word):
            check_distill(bad)


def test_teacher_is_frozen_and_renormalises_the_students_inputs() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.LazyLinear(3)
    )
    model(torch.randn(2, 1, 8, 8))  # materialise the lazy layer
    mean_s, std_s, mean_t, std_t = 0.2, 0.5, 0.3, 0.25
    teacher = Teacher(
        model,
        torch.tensor([(mean_s - mean_t) / std_t]),
        torch.tensor([std_s / std_t]),
    )
    teacher.train()  # what LightningModule.train() would do to a child module
    assert not teacher.training and not model.training
    running = model[1].running_mean.clone()
    pixels = torch.rand(4, 1, 8, 8)
    out = teacher((pixels - mean_s) / std_s)
    torch.testing.assert_close(out, model((pixels - mean_t) / std_t))  # dropout off, same input
    torch.testing.assert_close(model[1].running_mean, running)
    assert not out.requires_grad and all(not p.requires_grad for p in model.parameters())


def _capture_module(monkeypatch) -> list:
    built = []
    original = train_task.build_module

    def build_and_keep(cfg, dm):
        built.append(original(cfg, dm))
        return built[-1]

    monkeypatch.setattr(train_task, "build_module", build_and_keep)
    return built


def test_distillation_trains_the_student_only(tmp_path: Path, monkeypatch) -> None:
    built = _capture_module(monkeypatch)
    published = load_file(WEIGHTS)
    results = run_train(tmp_path, [*TEACHER_DATA, "trainer.max_epochs=2", DISTILL])
    assert results["global_steps"] == 8 and results["test_acc1"] is not None
    module = built[0]
    teacher = module.teacher
    assert not teacher.training and not any(m.training for m in teacher.modules())
    for name, value in teacher.model.state_dict().items():  # BN statistics included
        torch.testing.assert_close(value, published[name], msg=name)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    # Checkpoints (and weights exported from them) hold the student and nothing else; the
    # optimizer steps the student's parameters only.
    student = create_model("lenet5", in_chans=1, num_classes=10)
    student_keys = set(student.state_dict())
    for ckpt in ("best.ckpt", "last.ckpt"):
        raw = torch.load(tmp_path / "checkpoints" / ckpt, weights_only=True)
        (optimizer,) = raw["optimizer_states"]
        stepped = [i for g in optimizer["param_groups"] for i in g["params"]]
        assert len(stepped) == len(list(student.parameters()))
        assert {k for k in raw["state_dict"] if k.startswith("model.")} == {
            f"model.{k}" for k in student_keys
        }
        assert not [k for k in raw["state_dict"] if "teacher" in k]
        sd, info = read_checkpoint(tmp_path / "checkpoints" / ckpt)
        assert set(sd) == student_keys and info["model"] == "lenet5"


def test_a_distillation_run_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    run_train(tmp_path, [*TEACHER_DATA, "trainer.max_epochs=1", DISTILL])
    resumed = run_train(
        tmp_path, [*TEACHER_DATA, "trainer.max_epochs=2", DISTILL, "ckpt_path=last"]
    )
    assert resumed["epochs"] == 2 and resumed["global_steps"] == 8


def test_the_soft_targets_change_what_the_student_learns(tmp_path: Path) -> None:
    plain = run_train(tmp_path / "plain", [*TEACHER_DATA, "trainer.max_epochs=1"])
    taught = run_train(tmp_path / "kd", [*TEACHER_DATA, "trainer.max_epochs=1", DISTILL])
    assert plain["test_loss"] != taught["test_loss"]  # same seed and batches: only the loss differs


def test_teacher_from_a_weights_path_with_other_statistics(tmp_path: Path) -> None:
    data = {
        "name": "synthetic",
        "in_chans": 1,
        "image_size": [28, 28],
        "num_classes": 10,
        "mean": [0.5],
        "std": [0.25],
    }
    teacher = load_teacher(str(WEIGHTS), data)
    direct = create_model("resnet20", in_chans=1, num_classes=10, shortcut="B").eval()
    direct.load_state_dict(load_file(WEIGHTS))
    pixels = torch.rand(3, 1, 28, 28)
    # The published weights saw Fashion-MNIST's statistics (mean 0.285925, std 0.352914).
    expected = direct((pixels - 0.285925) / 0.352914)
    torch.testing.assert_close(teacher((pixels - 0.5) / 0.25), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.in_chans=3", "data.image_size=28"], "takes 1-channel images but data=synthetic"),
        (["data.in_chans=1", "data.image_size=32"], "trained on 28x28 images"),
        (["data.in_chans=1", "data.image_size=28", "data.num_classes=5"], "predicts 10 classes"),
    ],
)
def test_a_teacher_the_data_cannot_serve_is_a_one_line_error(tmp_path, overrides, message) -> None:
    with pytest.raises(UserError, match=message):
        run_train(tmp_path, [*SYNTHETIC_TINY, "trainer=debug", *overrides, DISTILL])


def test_unknown_teacher_is_a_one_line_error_on_the_command_line(tmp_path: Path) -> None:
    proc = cli(
        "train.py",
        [
            *TEACHER_DATA,
            "train.distill={teacher:resnet20:imagenet}",
            f"hydra.run.dir={tmp_path}",
        ],
    )
    line = one_line_error(proc)
    assert "no pretrained tag 'imagenet'" in line and "fmnist" in line


def test_kd_experiment_composes_with_the_published_teacher() -> None:
    cfg = compose(["experiment=kd_lenet5_from_resnet20"])
    assert cfg.model.name == "lenet5" and cfg.data.name == "fashion_mnist"
    assert cfg.train.distill.teacher == "resnet20:fmnist"
    baseline = compose(["experiment=kd_lenet5_from_resnet20", "train.distill=null"])
    assert baseline.train.distill is None
    with_teacher, without = OmegaConf.to_container(cfg), OmegaConf.to_container(baseline)
    with_teacher["train"].pop("distill"), without["train"].pop("distill")
    assert with_teacher == without  # the same recipe but for the teacher
