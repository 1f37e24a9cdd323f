"""Weight EMA and test-time augmentation: averages against hand computations."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zoo.data.tta import check_tta, shift, tta_logits, tta_views
from zoo.errors import UserError
from zoo.evaluation.metrics import evaluate_model
from zoo.training.callbacks import WeightEMA
from zoo.training.module import ZooClassifier


def test_shift_moves_pixels_and_pads_with_zeros() -> None:
    x = torch.arange(1, 17, dtype=torch.float32).view(1, 1, 4, 4)
    down_right = shift(x, 1, 1)
    assert torch.equal(down_right[..., 1:, 1:], x[..., :-1, :-1])
    assert down_right[..., 0, :].abs().sum() == 0 and down_right[..., :, 0].abs().sum() == 0
    up_left = shift(x, -1, -1)
    assert torch.equal(up_left[..., :-1, :-1], x[..., 1:, 1:])
    assert up_left[..., -1, :].abs().sum() == 0


@pytest.mark.parametrize(("mode", "count"), [("flip", 2), ("flip_shift", 6)])
def test_tta_averages_every_view(mode: str, count: int) -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.LazyLinear(4)).eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        averaged = tta_logits(model, x, mode)
        views = tta_views(x, mode)
        by_hand = sum(model(v) for v in views) / len(views)
        flipped = tta_logits(model, x.flip(-1), "flip")
        assert not torch.allclose(model(x), model(x.flip(-1)))
    assert len(views) == count
    assert torch.equal(views[1], x.flip(-1))
    torch.testing.assert_close(averaged, by_hand)
    torch.testing.assert_close(flipped, tta_logits(model, x, "flip"))


@pytest.mark.parametrize("mode", [True, "flips", "shift"])
def test_unknown_tta_is_a_user_error(mode) -> None:
    with pytest.raises(UserError, match="use null, flip or flip_shift"):
        check_tta(mode)


def test_classifier_test_step_and_eval_task_use_the_same_tta() -> None:
    module = ZooClassifier("lenet5", {"num_classes": 10}, tta="flip_shift").eval()
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    with torch.no_grad():
        module.test_step((x, y), 0)
        expected = tta_logits(module.model, x, "flip_shift").argmax(1).eq(y).float().mean()
        plain = module.model(x).argmax(1).eq(y).float().mean()
    assert module.test_acc1.compute() == pytest.approx(float(expected))
    evaluated = evaluate_model(module.model, [(x, y)], 10, tta="flip_shift")
    assert evaluated["acc1"] == pytest.approx(float(expected)) and evaluated["tta"] == "flip_shift"
    assert evaluate_model(module.model, [(x, y)], 10)["acc1"] == pytest.approx(float(plain))


class _Regression(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return (self.layer(x) - y).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class _RawWeights(pl.Callback):
    """The module's raw parameters and buffers after every optimizer step."""

    def __init__(self) -> None:
        self.seen: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.seen.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def test_weight_ema_checkpoints_and_ends_with_the_warmed_up_average(tmp_path: Path) -> None:
    decay = 0.5
    data = DataLoader(TensorDataset(torch.randn(32, 3), torch.randn(32, 2)), batch_size=8)
    raw, ema = _RawWeights(), WeightEMA(decay=decay)
    module = _Regression()
    trainer = pl.Trainer(
        max_epochs=1,
        callbacks=[raw, ema],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, data)
    expected = {k: v.float() for k, v in raw.seen[0].items()}
    for n, step in enumerate(raw.seen[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        expected = {k: expected[k] + (step[k].float() - expected[k]) * (1 - d) for k in expected}
    assert not torch.allclose(expected["layer.0.weight"], raw.seen[-1]["layer.0.weight"])
    for key, value in module.state_dict().items():  # the average replaced the raw weights
        if value.is_floating_point():
            torch.testing.assert_close(value, expected[key], msg=key)
    trainer.save_checkpoint(tmp_path / "end.ckpt")
    saved = torch.load(tmp_path / "end.ckpt", weights_only=True)["state_dict"]
    torch.testing.assert_close(saved["layer.1.running_mean"], expected["layer.1.running_mean"])


@pytest.mark.parametrize("decay", [1.0, -0.1])
def test_ema_decay_outside_0_1_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="use a number in"):
        WeightEMA(decay=decay)
