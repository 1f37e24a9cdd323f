"""Minimal stable symbolic corrections against brute force on tiny piecewise-linear networks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SYNTHETIC_TINY, compose, run_train
from torch import nn

from zoo.analysis.corrections import minimal_correction
from zoo.errors import UserError
from zoo.paths import ROOT
from zoo.tasks import corrections as corrections_task
from zoo.tasks import corrections_study

BOX = 2.0  # the free features range over [-BOX, BOX]
GRID = 401  # points per axis: spacing 0.01


def mlp(seed: int, inputs: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(inputs, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)
    ).double()


def convnet(seed: int) -> nn.Module:
    """Conv, BatchNorm (eval), ReLU, max- and average-pooling and Flatten on a 1×4×4 input."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2, 3, 1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(3, 3),
    ).double()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def grid_search(net: nn.Module, x: torch.Tensor, features: list[int], target: int):
    """Every input on a GRID × GRID lattice over the two free features in [-BOX, BOX]: the
    closest one (weighted L1 with the default weights 1 / (2 BOX)) classified as ``target``."""
    axis = torch.linspace(-BOX, BOX, GRID, dtype=torch.float64)
    pairs = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    inputs = x.flatten().repeat(len(pairs), 1)
    inputs[:, features] = pairs
    with torch.no_grad():
        hit = net(inputs.view(len(pairs), *x.shape)).argmax(1) == target
    distances = (pairs - x.flatten()[features]).abs().sum(1) / (2 * BOX)
    return float(distances[hit].min()) if hit.any() else None


def case(kind: str, seed: int, features: list[int], target: int):
    """A network, an input drawn with seed 100 + seed, the two free features and a target the
    grid search reaches."""
    net = {"mlp": mlp, "mlp4": lambda s: mlp(s, inputs=4), "conv": convnet}[kind](seed)
    shape = {"mlp": (2,), "mlp4": (4,), "conv": (1, 4, 4)}[kind]
    torch.manual_seed(100 + seed)
    return net, torch.rand(*shape, dtype=torch.float64) - 0.5, features, target


CASES = [
    case("mlp", 4, [0, 1], 2),
    case("mlp", 5, [0, 1], 0),
    case("mlp", 8, [0, 1], 2),
    case("mlp4", 2, [1, 3], 0),  # two of four inputs free, the others fixed
    case("mlp4", 8, [1, 3], 1),
    case("conv", 9, [5, 10], 1),
    case("conv", 9, [0, 15], 1),
]


@pytest.mark.parametrize(("net", "x", "features", "target"), CASES)
def test_minimal_correction_matches_a_grid_search(net, x, features, target) -> None:
    expected = grid_search(net, x, features, target)
    result = minimal_correction(net, x, target, features, 0.0, (-BOX, BOX), max_regions=1000)
    assert expected is not None and result.found and result.certified
    with torch.no_grad():
        assert int(net(x[None]).argmax()) != target
        assert int(net(result.x[None]).argmax()) == target
    changed = (result.x - x).flatten().abs() > 0
    assert not changed[[i for i in range(x.numel()) if i not in features]].any()
    # The LP is exact; the grid's best point lies at most half a spacing away on each axis.
    half_spacing = BOX / (GRID - 1)
    assert expected - half_spacing / BOX - 1e-9 <= result.distance <= expected + 1e-6
    z = result.x.flatten()[features].numpy()
    assert np.all(result.A @ z <= result.b + 1e-7)  # the region's constraints hold there


def test_every_input_in_the_symbolic_region_reaches_the_target() -> None:
    net, x, features, target = CASES[0]
    result = minimal_correction(net, x, target, features, 0.0, (-BOX, BOX), max_regions=1000)
    assert result.found and result.num_regions == len(result.pieces) >= 1
    points = (torch.rand(20_000, 2, dtype=torch.float64) * 2 - 1) * BOX
    for a, b in result.pieces:
        inside = torch.from_numpy(np.all(points.numpy() @ a.T <= b, axis=1))
        with torch.no_grad():
            classes = net(points[inside]).argmax(1)
        assert inside.sum() > 0 and (classes == target).all()


@pytest.mark.parametrize("index", [0, 3, 5])
def test_stable_corrections_keep_the_target_on_every_corner_of_the_box(index: int) -> None:
    net, x, features, target = CASES[index]
    radius = 0.05
    plain = minimal_correction(net, x, target, features, 0.0, (-BOX, BOX), max_regions=1000)
    result = minimal_correction(net, x, target, features, radius, (-BOX, BOX), max_regions=1000)
    assert result.found and result.stable
    assert result.distance >= plain.distance - 1e-9  # stability costs distance, never saves it
    assert result.nearest_distance == pytest.approx(plain.distance, abs=1e-7)
    z = result.x.flatten()[features]
    corners = x.flatten().repeat(4, 1)
    for i, (s0, s1) in enumerate([(-1, -1), (-1, 1), (1, -1), (1, 1)]):
        corners[i, features] = z + radius * torch.tensor([s0, s1], dtype=torch.float64)
    with torch.no_grad():
        assert (net(corners.view(4, *x.shape)).argmax(1) == target).all()
    a, b = result.A[:-4], result.b[:-4]  # the region's rows before the 4 bound rows
    assert np.all(a @ z.numpy() + np.abs(a) @ np.full(2, radius) <= b + 1e-7)  # box inside


def test_an_input_already_in_the_target_class_needs_no_change() -> None:
    net, x, features, _ = CASES[0]
    predicted = int(net(x[None]).argmax())
    result = minimal_correction(net, x, predicted, features, 0.0, (-BOX, BOX))
    assert result.found and result.distance == pytest.approx(0.0, abs=1e-9)
    torch.testing.assert_close(result.x, x)


def test_unreachable_target_is_reported_not_faked() -> None:
    net = mlp(0)
    with torch.no_grad():
        net[-1].bias[2] = -1e3  # class 2 never wins inside the bounds
    x = torch.zeros(2, dtype=torch.float64)
    result = minimal_correction(net, x, 2, [0, 1], 0.0, (-BOX, BOX), max_regions=1000)
    assert not result.found and result.x is None and result.distance is None
    assert result.certified  # every region inside the bounds was examined
    capped = minimal_correction(net, x, 2, [0, 1], 0.0, (-BOX, BOX), max_regions=2)
    assert not capped.found and not capped.certified and capped.regions_explored == 2


@pytest.mark.parametrize("layer", [nn.Tanh(), nn.Sigmoid(), nn.LeakyReLU(), nn.GELU()])
def test_layers_that_are_not_piecewise_linear_are_refused(layer: nn.Module) -> None:
    net = nn.Sequential(nn.Linear(2, 4), layer, nn.Linear(4, 2))
    with pytest.raises(UserError, match=rf"layer '1' is {type(layer).__name__}"):
        minimal_correction(net, torch.zeros(2), 1, [0, 1], 0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": [0, 0]}, "distinct"),
        ({"features": [5]}, "distinct"),
        ({"target": 3}, "target"),
        ({"bounds": (0.5, 1.0)}, "bounds"),
        ({"radius": -1.0}, "radius"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"features": [0, 1], "target": 1, "radius": 0.0, "bounds": (-BOX, BOX)} | kwargs
    with pytest.raises(UserError, match=message):
        minimal_correction(mlp(0), torch.zeros(2, dtype=torch.float64), **args)


def test_corrections_task_on_a_lenet5_checkpoint(tmp_path: Path) -> None:
    results = run_train(
        tmp_path / "run",
        [
            "model=lenet5",
            "trainer.max_epochs=1",
            *SYNTHETIC_TINY,
            "data.image_size=28",
            "data.in_chans=1",
        ],
    )
    overrides = [
        "task=corrections",
        f"ckpt_path={results['best_checkpoint']}",
        f"output_dir={tmp_path / 'out'}",
        *SYNTHETIC_TINY[:-1],
        "data.image_size=28",
        "data.in_chans=1",
        "task.max_regions=5",
    ]
    summary = corrections_task.run(compose([*overrides, "task.patch=[10,10,4,5]"], "evaluate"))
    saved = json.loads((tmp_path / "out" / "corrections.json").read_text())
    assert saved["patch"] == [10, 10, 4, 5] and saved["target"] != saved["predicted"]
    if summary["found"]:  # a 1-epoch model on noise may need more than 5 regions
        assert saved["corrected_prediction"] == saved["target"]
        a, b = np.array(saved["region"]["A"]), np.array(saved["region"]["b"])
        assert np.all(a @ np.array(saved["corrected_pixels"]) <= b + 1e-6)
        assert all(0 <= p <= 1 for p in saved["corrected_pixels"])
        assert (tmp_path / "out" / "corrections.png").stat().st_size > 0
    with pytest.raises(UserError, match="max_pixels"):
        corrections_task.run(compose([*overrides, "task.patch=[0,0,5,5]"], "evaluate"))


def test_corrections_study_reproduces_the_published_tabular_rows(
    tmp_path: Path, monkeypatch
) -> None:
    """``task=corrections_study task.part=tabular`` on the first 4 inputs: the rows of
    docs/corrections/tabular.json (the same MLP, targets, outcomes and distances)."""
    pytest.importorskip("sklearn")
    monkeypatch.setattr(corrections_study, "gemm_gflops", lambda: 0.0)  # the stamp only
    overrides = [
        "task=corrections_study",
        "task.part=tabular",
        "task.n=4",
        f"output_dir={tmp_path}",
    ]
    summary = corrections_study.run(compose(overrides, "evaluate"))
    rows = json.loads((tmp_path / "tabular.json").read_text())["rows"]
    published = json.loads((ROOT / "docs" / "corrections" / "tabular.json").read_text())["rows"]
    for row, ref in zip(rows, published[:4], strict=True):
        assert [row[k] for k in ("target", "found", "stable", "certified")] == [
            ref[k] for k in ("target", "found", "stable", "certified")
        ]
        if ref["found"]:
            assert row["distance"] == pytest.approx(ref["distance"], rel=1e-5)
    assert summary["inputs"] == 4 and summary["found"] == sum(r["found"] for r in published[:4])
    assert (tmp_path / "tabular_region.png").stat().st_size > 0
    with pytest.raises(UserError, match="task.part='table'"):
        corrections_study.run(compose([*overrides, "task.part=table"], "evaluate"))


def test_the_model_is_left_as_it_was() -> None:
    net, x, features, target = CASES[5]  # with BatchNorm
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = minimal_correction(net, x, target, features, 0.0, (-BOX, BOX))
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    net.eval()
    with torch.no_grad():
        assert int(net(result.x[None]).argmax()) == target
