"""BatchNorm recalibration: statistics against a hand computation with dropout off, the callback
after fit, and ``evaluate.py task=recalibrate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import SYNTHETIC_TINY, compose, run_train
from torch import nn

from zoo.data import SyntheticDataModule
from zoo.errors import UserError
from zoo.tasks.recalibrate import run as recalibrate_task
from zoo.tools.export import export
from zoo.training import recalibrate_bn
from zoo.weights.checkpoint import model_from_checkpoint, read_checkpoint


class _BNDropoutNet(nn.Module):
    """conv - nn.Dropout - BN - ReLU - functional dropout - BN: both kinds of dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.bn1 = nn.BatchNorm2d(3)
        self.bn2 = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.drop(self.conv(x))))
        return self.bn2(F.dropout(x, 0.5, self.training))


def _batch_stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean, unbiased variance (what BN stores) and biased variance (what it uses)."""
    flat = z.transpose(0, 1).flatten(1)
    return flat.mean(1), flat.var(1, unbiased=True), flat.var(1, unbiased=False)


def _expected_statistics(
    net: _BNDropoutNet, batches: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Both BNs' statistics by hand: dropout off, BN normalising with each batch's own stats,
    running values the plain average over batches."""
    sums = {k: torch.zeros(3) for k in ("bn1.mean", "bn1.var", "bn2.mean", "bn2.var")}
    with torch.no_grad():
        for x in batches:
            z1 = net.conv(x)
            m1, v1, b1 = _batch_stats(z1)
            shape = (1, -1, 1, 1)
            h = (z1 - m1.view(shape)) / (b1.view(shape) + net.bn1.eps).sqrt()
            z2 = F.relu(h * net.bn1.weight.view(shape) + net.bn1.bias.view(shape))
            m2, v2, _ = _batch_stats(z2)
            for key, value in zip(sums, (m1, v1, m2, v2), strict=True):
                sums[key] += value
    return {k: v / len(batches) for k, v in sums.items()}


def test_statistics_equal_hand_computation_with_both_dropouts_off() -> None:
    net = _BNDropoutNet()
    with torch.no_grad():
        net.bn1.weight.uniform_(0.5, 2.0)
        net.bn1.bias.uniform_(-1.0, 1.0)
    batches = [torch.randn(8, 2, 5, 5) * 2 + 1 for _ in range(4)]
    params = {k: v.clone() for k, v in net.named_parameters()}
    net.train()
    out = recalibrate_bn(net, [(x, torch.zeros(8)) for x in batches], num_batches=3)
    expected = _expected_statistics(net, batches[:3])
    for name in ("bn1", "bn2"):
        bn = getattr(net, name)
        torch.testing.assert_close(bn.running_mean, expected[f"{name}.mean"])
        torch.testing.assert_close(bn.running_var, expected[f"{name}.var"])
        assert bn.momentum == 0.1  # restored after the cumulative average
    assert out is net and not any(m.training for m in net.modules())
    for k, v in net.named_parameters():
        assert torch.equal(v, params[k]), k


def test_dropout_would_have_changed_the_statistics() -> None:
    """The hand computation is sensitive to dropout: with it on, the statistics differ."""
    net = _BNDropoutNet()
    batches = [torch.randn(8, 2, 5, 5) for _ in range(3)]
    expected = _expected_statistics(net, batches)
    with torch.no_grad():
        net.train()
        net.bn1.reset_running_stats()
        net.bn1.momentum = None
        for x in batches:
            net.bn1(net.drop(net.conv(x)))
    assert not torch.allclose(net.bn1.running_var, expected["bn1.var"], rtol=1e-2)


def test_tensor_batches_and_model_without_batchnorm() -> None:
    net = _BNDropoutNet()
    batches = [torch.randn(4, 2, 5, 5) for _ in range(2)]
    recalibrate_bn(net, iter(batches))
    torch.testing.assert_close(net.bn1.running_mean, _expected_statistics(net, batches)["bn1.mean"])
    plain = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Dropout(0.2)).train()
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    with pytest.warns(UserWarning, match="no BatchNorm"):
        assert recalibrate_bn(plain, batches) is plain
    assert plain.training and all(torch.equal(v, before[k]) for k, v in plain.state_dict().items())
    with pytest.raises(ValueError, match="yielded nothing"):
        recalibrate_bn(net, [])


def _stats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


def _tiny_resnet(tmp_path: Path, *extra: str) -> dict:
    return run_train(
        tmp_path / "run",
        ["model=resnet20", "trainer.max_epochs=1", *SYNTHETIC_TINY, "data.image_size=16", *extra],
    )


def test_callback_recalibrates_best_checkpoint_before_the_test(tmp_path: Path) -> None:
    results = _tiny_resnet(
        tmp_path, "callbacks.recalibrate_bn=true", "callbacks.recalibrate_images=48"
    )
    report = results["bn_recalibration"]
    assert report["num_images"] == 48 and 0 <= report["val_acc1_after"] <= 1
    best = Path(results["best_checkpoint"])
    assert torch.load(best, weights_only=True)["bn_recalibration"] == report
    stored, _ = read_checkpoint(best)
    model, _ = model_from_checkpoint(best)
    dm = SyntheticDataModule(num_samples=96, num_test=32, val_size=32, batch_size=16, image_size=16)
    dm.setup()
    recalibrate_bn(model, dm.calibration_dataloader(), num_batches=3)  # idempotent: same stats
    for k, v in _stats(model.state_dict()).items():
        torch.testing.assert_close(stored[k], v, msg=k)
    assert export(best, tmp_path / "w.safetensors")["bn_recalibration"] == report


def test_recalibrate_task_writes_weights_and_reports_test_before_after(tmp_path: Path) -> None:
    results = _tiny_resnet(tmp_path)
    ckpt = Path(results["best_checkpoint"])
    out = tmp_path / "recal.safetensors"
    cfg = compose(
        [
            f"ckpt_path={ckpt}",
            f"output_dir={tmp_path}",
            "task=recalibrate",
            "task.num_images=32",
            f"task.out={out}",
            *SYNTHETIC_TINY[:-1],
            "data.image_size=16",
        ],
        "evaluate",
    )
    meta = recalibrate_task(cfg)
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved == meta and saved["bn_recalibration"]["num_images"] == 32
    assert saved["bn_recalibration"]["test_acc1_before"] == pytest.approx(results["test_acc1"])
    new, _ = model_from_checkpoint(out)
    old, _ = read_checkpoint(ckpt)
    changed = [k for k, v in new.state_dict().items() if not torch.equal(v, old[k])]
    assert changed and all(
        k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed
    )
    cfg.task.num_images = 0
    with pytest.raises(Exception, match="whole number >= 1"):
        recalibrate_task(cfg)


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("typo/w_bn.safetensors", "typo does not exist: create it first"),
        ("w.safetensors", "is the file it is made from"),
    ],
)
def test_recalibrate_task_output_is_checked_before_the_work(
    tmp_path: Path, out: str, message: str
) -> None:
    """A mistyped folder is not created, and the source weights are never overwritten."""
    source = tmp_path / "w.safetensors"
    cfg = compose(
        [
            f"ckpt_path={source}",
            f"output_dir={tmp_path}",
            "task=recalibrate",
            f"task.out={tmp_path / out}",
        ],
        "evaluate",
    )
    with pytest.raises(UserError, match=message):
        recalibrate_task(cfg)
    assert not (tmp_path / "typo").exists()
