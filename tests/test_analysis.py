"""Loss landscapes, Hessian spectra and attacks against explicit references on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SYNTHETIC_TINY, compose, run_train
from torch import nn

from zoo.analysis import attacks, hessian, landscape, robustness
from zoo.errors import UserError
from zoo.evaluation import uncertainty as stats
from zoo.tasks import hessian as hessian_task
from zoo.tasks import landscape as landscape_task
from zoo.tasks import robustness as robustness_task


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 3),
    )


def toy_data(n: int = 64, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    x = torch.rand(n, 1, 6, 6, generator=gen) * 0.5
    for c in range(3):  # class c: bright row block c
        x[y == c, :, 2 * c : 2 * c + 2] += 0.5
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, n, 32)]


# --- landscapes ---------------------------------------------------------------------------------


def test_filter_normalized_direction() -> None:
    model = tiny_cnn()
    d = landscape.random_direction(model, norm="filter", ignore="biasbn", seed=1)
    params = dict(model.named_parameters())
    assert d.keys() == params.keys()
    for name in ("0.weight", "5.weight"):  # conv filters and Linear rows
        w, di = params[name].detach(), d[name]
        torch.testing.assert_close(di.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1))
        assert not torch.allclose(di, w)
    for name in ("0.bias", "1.weight", "1.bias", "5.bias"):
        assert torch.count_nonzero(d[name]) == 0
    kept = landscape.random_direction(model, ignore=None, seed=1)
    torch.testing.assert_close(kept["1.weight"], params["1.weight"].detach())
    again = landscape.random_direction(model, seed=1)
    assert all(torch.equal(again[k], d[k]) for k in d)
    layer = landscape.random_direction(model, norm="layer", seed=1)
    torch.testing.assert_close(layer["0.weight"].norm(), params["0.weight"].detach().norm())


def test_states_direction_covers_running_statistics() -> None:
    model = tiny_cnn()
    d = landscape.random_direction(model, dir_type="states", ignore=None, seed=0)
    assert d.keys() == model.state_dict().keys()
    torch.testing.assert_close(d["1.running_var"], model.state_dict()["1.running_var"])
    assert torch.count_nonzero(d["1.num_batches_tracked"]) == 0


def test_surface_origin_is_the_models_loss_and_weights_are_restored() -> None:
    model = tiny_cnn()
    data = toy_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss, acc = landscape.evaluate(model, data)
    dirs = [landscape.random_direction(model, seed=s) for s in (0, 1)]
    grid = landscape.parse_grid("-1:1:5")
    result = landscape.surface(model, data, dirs, [grid, grid], progress=False)
    assert result["loss"].shape == (5, 5)
    assert result["loss"][2, 2] == pytest.approx(loss, abs=1e-6)
    assert result["acc"][2, 2] == pytest.approx(acc)
    assert np.ptp(result["loss"]) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training  # mode restored


def test_interrupted_surface_resumes(tmp_path: Path) -> None:
    model = tiny_cnn()
    data = toy_data()
    dirs = [landscape.random_direction(model, seed=s) for s in (0, 1)]
    grid = landscape.parse_grid("-0.5:0.5:4")
    full = landscape.surface(model, data, dirs, [grid, grid], progress=False)
    path = tmp_path / "s.npz"
    meta = {"seed": [0, 1]}
    partial = landscape.surface(
        model, data, dirs, [grid, grid], path, meta, save_every=3, max_new_points=7, progress=False
    )
    assert np.isnan(partial["loss"]).sum() == 16 - 7
    calls = []
    counted = lambda out, y: calls.append(1) or F.cross_entropy(out, y)  # noqa: E731
    resumed = landscape.surface(
        model, data, dirs, [grid, grid], path, meta, criterion=counted, progress=False
    )
    assert len(calls) == (16 - 7) * len(data)  # only the missing points were evaluated
    np.testing.assert_allclose(resumed["loss"], full["loss"], rtol=1e-6)
    with pytest.raises(UserError, match="other settings"):
        landscape.surface(model, data, dirs, [grid, grid], path, {"seed": [2, 3]}, progress=False)


@pytest.mark.parametrize("spec", ["-1:1", "1:-1:5", "a:b:c", "-1:1:0"])
def test_bad_grid(spec: str) -> None:
    with pytest.raises(UserError, match="grid"):
        landscape.parse_grid(spec)


def test_interpolation_between_checkpoints_hits_both_ends() -> None:
    a, b = tiny_cnn(), tiny_cnn()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.3)
    b.state_dict()["1.running_mean"].add_(0.2)
    data = toy_data()
    d = landscape.direction_between(a.state_dict(), b.state_dict())
    result = landscape.surface(a, data, [d], [np.array([0.0, 1.0])], progress=False)
    assert result["loss"][1] == pytest.approx(landscape.evaluate(b, data)[0], rel=1e-5)
    assert result["loss"][0] == pytest.approx(landscape.evaluate(a, data)[0], rel=1e-6)


# --- Hessian ------------------------------------------------------------------------------------


def _explicit_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy's Hessian with respect to all parameters, flattened."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        params, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            params[n] = flat[i : i + s.numel()].view(s)
            i += s.numel()
        out = torch.func.functional_call(model, params, (x,))
        return F.cross_entropy(out, y)

    return torch.autograd.functional.hessian(loss_of, flat0)


def _mlp_and_explicit_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.randn(40, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    batches = [(x[:25], y[:25]), (x[25:], y[25:])]
    return model, batches, _explicit_hessian(model, x, y)


def test_top_eigenvalues_match_the_explicit_hessian() -> None:
    model, batches, h = _mlp_and_explicit_hessian()
    evals, evecs = torch.linalg.eigh(h)
    order = evals.abs().argsort(descending=True)
    values, vectors = hessian.top_eigenvalues(
        model, F.cross_entropy, batches, k=3, max_iter=2000, tol=1e-10
    )
    for i in range(3):
        expected = float(evals[order[i]])
        assert values[i] == pytest.approx(expected, rel=1e-3)
        v = torch.cat([t.flatten() for t in vectors[i]])
        assert abs(float(v @ evecs[:, order[i]])) > 0.99


def test_top_eigenvalues_come_largest_first_before_convergence() -> None:
    model, batches, _ = _mlp_and_explicit_hessian()
    for max_iter in (1, 2, 3):
        values, vectors = hessian.top_eigenvalues(
            model, F.cross_entropy, batches, k=4, max_iter=max_iter, tol=1e-10
        )
        magnitudes = [abs(v) for v in values]
        assert magnitudes == sorted(magnitudes, reverse=True) and len(vectors) == 4


def test_default_trace_is_within_three_standard_errors_of_the_exact_trace() -> None:
    # Softmax regression on 20 features (63 parameters): Hutchinson's probes vary by about 20 %
    # of the trace here, so the 1 % rule stops after a few hundred probes.
    torch.manual_seed(0)
    model = nn.Linear(20, 3).double()
    x, y = torch.randn(200, 20, dtype=torch.float64), torch.randint(0, 3, (200,))
    batches = [(x[:120], y[:120]), (x[120:], y[120:])]
    h = _explicit_hessian(model, x, y)
    exact = float(torch.trace(h))  # the sum of the explicit Hessian's diagonal
    rtol = 0.01
    samples = hessian.trace_samples(model, F.cross_entropy, batches)  # defaults: rtol 1 %, ≥ 30
    mean, stderr = hessian.trace(model, F.cross_entropy, batches, return_stderr=True)
    assert (mean, stderr) == stats.mean_stderr(samples)
    assert 30 <= len(samples) < 2000  # stopped by the rule, not by max_iter
    assert stderr <= rtol * abs(mean)
    assert abs(mean - exact) <= 3 * stderr
    looser = hessian.trace_samples(model, F.cross_entropy, batches, rtol=0.05)
    assert len(looser) < len(samples)


class _Quadratic(nn.Module):
    """loss = Σ cᵢ pᵢ²: a diagonal Hessian 2·diag(c), so every Rademacher probe is exact."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(5, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.p * x


def test_trace_never_stops_before_the_minimum_number_of_probes() -> None:
    c = torch.arange(1.0, 6.0, dtype=torch.float64)
    criterion = lambda out, y: (c * out**2).sum(1).mean()  # noqa: E731
    batches = [(torch.ones(4, 5, dtype=torch.float64), torch.zeros(4))]
    for min_iter in (2, 30, 45):
        samples = hessian.trace_samples(_Quadratic(), criterion, batches, min_iter=min_iter)
        assert len(samples) == min_iter and samples == pytest.approx(
            [2 * float(c.sum())] * min_iter
        )
    capped = hessian.trace_samples(_Quadratic(), criterion, batches, max_iter=10, min_iter=30)
    assert len(capped) == 10
    assert not stats.precise_enough([1.0] * 29, 0.01, 30) and stats.precise_enough(
        [1.0] * 30, 0.01, 30
    )


def test_density_against_the_explicit_hessian() -> None:
    model, batches, h = _mlp_and_explicit_hessian()
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    nodes, weights = hessian.density(model, F.cross_entropy, batches, n_iter=20, n_v=2)
    evals = torch.linalg.eigvalsh(h)
    assert sum(weights) == pytest.approx(1.0)
    assert min(nodes) >= float(evals.min()) - 1e-8 and max(nodes) <= float(evals.max()) + 1e-8
    assert max(nodes) == pytest.approx(float(evals.max()), rel=1e-3)  # Lanczos finds the edge
    assert model.training and all(
        torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
    )


def test_slq_spread_over_random_starts_covers_the_exact_trace() -> None:
    model, batches, h = _mlp_and_explicit_hessian()
    dim = h.shape[0]
    runs = hessian.lanczos_runs(model, F.cross_entropy, batches, n_iter=dim, n_v=40)
    assert all(sum(w) == pytest.approx(1.0) for _, w in runs)
    spread = hessian.slq_spread(runs, dim)
    evals = torch.linalg.eigvalsh(h)
    trace = spread["trace"]
    assert 0 < trace["stderr"] and abs(trace["mean"] - float(evals.sum())) <= 3 * trace["stderr"]
    # With as many steps as dimensions every start recovers the whole spectrum: no spread.
    assert spread["lambda_max"]["mean"] == pytest.approx(float(evals.max()), rel=1e-6)
    assert spread["lambda_max"]["stderr"] < 1e-6 * abs(float(evals.max()))
    assert 0 <= spread["negative_weight"]["mean"] <= 1


# --- robustness ---------------------------------------------------------------------------------


def _trained_toy() -> tuple[nn.Module, list]:
    model = tiny_cnn()
    data = toy_data(128)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    for _ in range(60):
        for x, y in data:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval(), data


def test_pgd_stays_in_the_ball_and_lowers_accuracy() -> None:
    model, data = _trained_toy()
    mean, std = torch.tensor([0.4]), torch.tensor([0.3])
    x, y = data[0]
    normalized = (x - mean) / std
    eps = 0.1
    adv = attacks.pgd(model, normalized, y, eps, steps=5, mean=mean, std=std)
    pixels = adv * std + mean
    assert (pixels - x).abs().max() <= eps + 1e-6
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    batches = [((bx - mean) / std, by) for bx, by in data]
    acc = robustness.robust_accuracy(model, batches, [0.0, 0.05, 0.2], "pgd", mean=mean, std=std)
    clean = landscape.evaluate(model, batches)[1]
    assert acc[0.0].value == pytest.approx(clean) and clean > 0.9
    assert acc[0.2].value < acc[0.05].value < clean
    assert all(p.trials == sum(len(y) for _, y in data) for p in acc.values())
    lo, hi = acc[0.05].interval()
    assert lo < acc[0.05].value < hi
    fgsm = robustness.robust_accuracy(model, batches, [0.2], "fgsm", mean=mean, std=std)
    assert fgsm[0.2].value < clean


def test_targeted_pgd_changes_only_the_masked_pixels() -> None:
    model, data = _trained_toy()
    x, y = data[0]
    wanted = (y + 1) % 3
    mask = torch.zeros(1, 6, 6)
    mask[:, :, :3] = 1  # the left half of each image
    adv = attacks.pgd(model, x, wanted, 1.0, steps=20, targeted=True, mask=mask)
    assert torch.equal(adv[..., 3:], x[..., 3:])
    with torch.no_grad():
        hit = (model(adv).argmax(1) == wanted).float().mean()
        before = (model(x).argmax(1) == wanted).float().mean()
    assert hit > 0.5 > before


@pytest.mark.parametrize(("eps", "attack"), [(-0.1, "pgd"), (0.1, "cw")])
def test_bad_attack_settings(eps: float, attack: str) -> None:
    model, data = tiny_cnn(), toy_data()
    with pytest.raises(UserError):
        robustness.robust_accuracy(model, data, [eps], attack)


# --- tasks and training -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("run")
    results = run_train(
        out, ["model=lenet5", "trainer.max_epochs=1", *SYNTHETIC_TINY, "data.image_size=28"]
    )
    return results["best_checkpoint"]


def _task_cfg(checkpoint: str, out: Path, task: str, extra: list[str]):
    return compose(
        [
            f"task={task}",
            f"ckpt_path={checkpoint}",
            f"output_dir={out}",
            *SYNTHETIC_TINY[:-1],
            "data.image_size=28",
            *extra,
        ],
        "evaluate",
    )


def test_landscape_task(tmp_path: Path, checkpoint: str) -> None:
    cfg = _task_cfg(checkpoint, tmp_path, "landscape", ["task.grid=-1:1:3", "task.num_images=32"])
    summary = landscape_task.run(cfg)
    for name in ("landscape.npz", "landscape.json", "landscape_contour.png", "landscape_3d.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert summary["loss_min"] <= summary["loss_at_origin"] <= summary["loss_max"]
    assert summary["direction_seeds"] == [0, 1] and "spread" not in summary
    with np.load(tmp_path / "landscape.npz") as saved:
        assert saved["loss"].shape == (3, 3) and not np.isnan(saved["loss"]).any()
    cfg = _task_cfg(
        checkpoint,
        tmp_path,
        "landscape",
        ["task.grid=-1:1:3", "task.num_images=32", "task.repeats=3", "seed=0"],
    )
    repeated = landscape_task.run(cfg)  # the first draw is reused from landscape.npz
    assert [r["direction_seeds"] for r in repeated["repeats"]] == [[0, 1], [2, 3], [4, 5]]
    assert repeated["loss_max"] == summary["loss_max"]
    maxima = [r["loss_max"] for r in repeated["repeats"]]
    assert repeated["spread"]["loss_max"]["mean"] == pytest.approx(np.mean(maxima))
    assert repeated["spread"]["loss_max"]["std"] == pytest.approx(np.std(maxima, ddof=1))
    assert len(set(maxima)) == 3 and (tmp_path / "landscape_spread.png").stat().st_size > 0


def test_hessian_and_robustness_tasks(tmp_path: Path, checkpoint: str) -> None:
    cfg = _task_cfg(
        checkpoint,
        tmp_path,
        "hessian",
        [
            "task.k=2",
            "task.num_images=32",
            "task.max_iter=20",
            "task.trace_max_iter=40",
            "task.min_probes=5",
            "task.rtol=0.05",
            "task.lanczos_iter=10",
            "task.slq_runs=3",
        ],
    )
    result = hessian_task.run(cfg)
    saved = json.loads((tmp_path / "hessian.json").read_text())
    trace = saved["trace"]
    assert 5 <= trace["probes"] <= 40 and trace["stderr"] > 0
    assert trace["reached_rtol"] == (trace["stderr"] <= 0.05 * abs(trace["mean"]))
    assert trace["reached_rtol"] or trace["probes"] == 40
    assert len(saved["density"]["runs"]) == 3 and saved["density"]["spread"]["trace"]["stderr"] > 0
    assert (
        saved["top_eigenvalues"] == result["top_eigenvalues"] and len(saved["top_eigenvalues"]) == 2
    )
    assert abs(saved["top_eigenvalues"][0]) >= abs(saved["top_eigenvalues"][1])
    assert (tmp_path / "loss_along_top_eigenvector.png").stat().st_size > 0
    cfg = _task_cfg(
        checkpoint, tmp_path, "robustness", ["task.num_images=32", "task.epsilons=[0,0.1]"]
    )
    result = robustness_task.run(cfg)
    saved = json.loads((tmp_path / "robustness.json").read_text())
    acc, ci = saved["accuracy"], saved["ci95"]
    assert acc["0.1"] <= acc["0.0"] and (tmp_path / "robustness.png").stat().st_size > 0
    assert ci["0.0"][0] <= acc["0.0"] <= ci["0.0"][1]
    assert ci["0.0"] == list(stats.wilson_interval(saved["correct"]["0.0"], 32))


def test_adversarial_training_option(tmp_path: Path) -> None:
    results = run_train(
        tmp_path,
        [
            "model=lenet5",
            "trainer.max_epochs=1",
            *SYNTHETIC_TINY,
            "data.image_size=28",
            "train.adversarial={attack:fgsm,eps:0.1}",
        ],
    )
    assert results["test_acc1"] is not None
    from zoo.training.module import ZooClassifier

    module = ZooClassifier(
        "lenet5",
        {"num_classes": 10, "in_chans": 1},
        data={"mean": [0.5], "std": [0.25]},
        adversarial={"attack": "fgsm", "eps": 0.1},
    )
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    adv = module._adversarial_batch(x, y)
    assert 0 < (adv - x).abs().max() * 0.25 <= 0.1 + 1e-6
    with pytest.raises(UserError, match="eps"):
        ZooClassifier("lenet5", {"num_classes": 10}, adversarial={"attack": "pgd", "eps": -1})


def test_shortcut_study_end_to_end(tmp_path: Path) -> None:
    from zoo.tasks.cli import train_or_study as train

    overrides = [
        "experiment=shortcut_landscape",
        f"output_dir={tmp_path}",
        *SYNTHETIC_TINY,
        "data.image_size=16",
        "data.in_chans=1",
        "data.train_subset=null",
        "trainer.max_epochs=1",
        "study.models=[resnet20,resnet20_noshort]",
        "study.grid=-1:1:3",
        "study.num_images=32",
        "study.hessian_images=32",
        "study.hessian_iter=3",
    ]
    cfg = compose(overrides)
    assert cfg.data.name == "synthetic" and cfg.optim.lr == 0.1
    train(cfg)
    table = json.loads((tmp_path / "shortcut_table.json").read_text())
    assert [(r["model"], r["depth"], r["shortcut"]) for r in table] == [
        ("resnet20", 20, True),
        ("resnet20_noshort", 20, False),
    ]
    for r in table:
        assert 0 <= r["test_error"] <= 100 and r["lambda_max"] != 0 and np.isfinite(r["trace"])
    assert (tmp_path / "shortcut_landscape.png").stat().st_size > 0
    assert "| resnet20_noshort | 20 | no |" in (tmp_path / "shortcut_table.md").read_text()
    stamp = (tmp_path / "resnet20" / "results.json").stat().st_mtime_ns
    train(compose(overrides))  # a rerun reuses the trained models and the saved surfaces
    assert (tmp_path / "resnet20" / "results.json").stat().st_mtime_ns == stamp
    assert (
        json.loads((tmp_path / "shortcut_table.json").read_text())[0]["test_error"]
        == (table[0]["test_error"])
    )
