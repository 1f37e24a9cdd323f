"""The fast-mode rewrites are exact; the benchmark harness fills its columns and writes JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import compose
from torch import nn

import zoo
from zoo.bench.reference import benchmark
from zoo.errors import UserError
from zoo.models.fast import (
    PointwiseConv2d,
    SamePaddedConv2d,
    count_rewritten,
    optimize,
    to_fast_input,
)
from zoo.tasks.benchmark import run


def _grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "make",
    [
        lambda: torchvision.models.resnet18(num_classes=10),
        lambda: zoo.create_model("densenet121", num_classes=10),
        lambda: zoo.create_model("resnet50", num_classes=10),
    ],
    ids=["tv_resnet18", "densenet121", "resnet50"],
)
def test_fast_mode_is_exact_forward_and_backward(make) -> None:
    torch.manual_seed(0)
    ref = make().double()
    fast = make().double()
    fast.load_state_dict(ref.state_dict())
    keys = list(fast.state_dict())
    optimize(fast)
    assert list(fast.state_dict()) == keys  # same checkpoints load into both
    counts = count_rewritten(fast)
    assert counts["same_padded"] > 0  # resnet18 has no stride-1 1×1 convs; the others do
    assert counts["pointwise"] > 0 or isinstance(ref, torchvision.models.ResNet)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)  # 32 px: the last stage runs on 1×1 maps
    y = torch.tensor([1, 2, 3])
    for model, inp in ((ref, x), (fast, to_fast_input(x))):
        model.train()
        nn.functional.cross_entropy(model(inp), y).backward()
    torch.testing.assert_close(fast(to_fast_input(x)), ref(x), rtol=1e-9, atol=1e-9)
    g_ref, g_fast = _grads(ref), _grads(fast)
    assert g_ref.keys() == g_fast.keys()
    for name in g_ref:
        scale = float(g_ref[name].abs().max())  # float64 sums in another order
        torch.testing.assert_close(g_fast[name], g_ref[name], rtol=1e-7, atol=1e-9 * scale)


def test_rewrites_only_where_exact() -> None:
    convs = nn.Sequential(
        nn.Conv2d(4, 4, 1),  # pointwise
        nn.Conv2d(4, 4, 3, padding=1),  # same-padded
        nn.Conv2d(4, 4, 3, stride=2, padding=1),  # strided: kept
        nn.Conv2d(4, 4, 3),  # no padding: kept
        nn.Conv2d(4, 4, 1, groups=2),  # grouped: kept
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),  # not zero padding: kept
    )
    optimize(convs, channels_last=False)
    assert [type(c) for c in convs] == [PointwiseConv2d, SamePaddedConv2d] + [nn.Conv2d] * 4
    pointwise, same = convs[0], convs[1]
    x = torch.randn(2, 4, 5, 5)
    # NCHW input: the pointwise conv falls back to the convolution, with the same result
    torch.testing.assert_close(
        pointwise(x), nn.functional.conv2d(x, pointwise.weight, pointwise.bias)
    )
    x1 = torch.randn(2, 4, 1, 1)
    expected = nn.functional.conv2d(x1, same.weight, same.bias, padding=1)
    torch.testing.assert_close(same(x1), expected)


def test_benchmark_rows_and_ratios(capsys) -> None:
    rows = benchmark(
        ["resnet18"],
        "torchvision",
        ["fast"],
        (3, 32, 32),
        batch=2,
        num_classes=10,
        warmup=1,
        repeats=1,
        memory=True,
    )
    assert [r["variant"] for r in rows] == ["default", "fast"]
    for row in rows:
        assert row["params"] == row["ref_params"] == 11_181_642
        assert row["train_ratio"] == pytest.approx(row["train_img_s"] / row["ref_train_img_s"])
        assert row["infer_ratio"] == pytest.approx(row["infer_img_s"] / row["ref_infer_img_s"])
        assert row["peak_train_mib"] > 0 and row["ref_peak_train_mib"] > 0
        assert row["memory_ratio"] == pytest.approx(
            row["peak_train_mib"] / row["ref_peak_train_mib"]
        )
    assert "train ×" in capsys.readouterr().out


def test_memory_efficient_variant_lowers_peak_memory() -> None:
    rows = benchmark(
        ["densenet121"],
        "torchvision",
        ["memory_efficient"],
        (3, 64, 64),
        batch=8,
        num_classes=10,
        warmup=0,
        repeats=1,
    )
    default, lean = rows
    assert lean["variant"] == "memory_efficient"
    assert lean["peak_train_mib"] < default["peak_train_mib"]


def test_benchmark_task_writes_json_and_markdown(tmp_path: Path) -> None:
    cfg = compose(
        [
            "task=benchmark",
            "models=[resnet18]",
            "against=timm",
            "task.input_size=[3,32,32]",
            "task.batch=2",
            "task.num_classes=10",
            "task.warmup=0",
            "task.repeats=1",
            "task.memory=false",
            f"output_dir={tmp_path}",
        ],
        "evaluate",
    )
    run(cfg)
    saved = json.loads((tmp_path / "benchmark.json").read_text())
    assert saved["against"] == "timm" and saved["threads"] == torch.get_num_threads()
    (row,) = saved["rows"]
    assert row["reference"] == "timm.resnet18" and row["peak_train_mib"] is None
    table = (tmp_path / "benchmark.md").read_text()
    assert "| resnet18 | default |" in table and "timm, input 3×32×32, batch 2" in table


@pytest.mark.parametrize(
    ("models", "against", "variants", "message"),
    [
        (["lenet5"], "torchvision", [], "not in torchvision"),
        (["resnet18"], "keras", [], "against='keras'"),
        (["resnet18"], "torchvision", ["turbo"], "unknown task.variants"),
        (["resnet18"], "torchvision", ["memory_efficient"], "no memory_efficient option"),
        (["resnet_18"], "torchvision", [], "unknown model"),
    ],
)
def test_benchmark_bad_input(models, against, variants, message) -> None:
    with pytest.raises(UserError, match=message):
        benchmark(models, against, variants, (3, 32, 32), 2, 10, 0, 1, memory=False)


def test_test_curve_records_time_to_accuracy(tmp_path: Path) -> None:
    from helpers import SYNTHETIC_TINY, run_train

    results = run_train(
        tmp_path,
        [
            "model=lenet5",
            "trainer.max_epochs=2",
            *SYNTHETIC_TINY,
            "data.image_size=28",
            "callbacks.test_curve=true",
            "callbacks.time_to=[0,101]",
        ],
    )
    curve = results["test_curve"]
    assert [p["epoch"] for p in curve] == [1, 2]
    assert 0 < curve[0]["seconds"] < curve[1]["seconds"]
    assert all(0 <= p["test_acc1"] <= 1 for p in curve)
    assert results["time_to_acc1"] == {"0": curve[0]["seconds"], "101": None}
