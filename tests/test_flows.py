"""Continuous normalizing flows (zoo.flows) against the change of variables: densities that
integrate to 1, Hutchinson's estimator against the exact trace, forward against backward solves,
a closed-form linear flow, zero dynamics, the toy densities, and training through train.py."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import compose, needs_fmnist, run_train
from torch import nn

from zoo.errors import UserError
from zoo.flows import (
    CNF,
    create_cnf,
    divergence_exact,
    divergence_hutchinson,
    logit_transform,
    sample_probe,
    toy_sample,
)
from zoo.flows.data import Toy2dDataModule, toy_log_prob
from zoo.flows.plots import density_grid

TOY_TRAIN = [
    "experiment=cnf_moons",
    "threads=1",
    "data.batch_size=64",
    "data.batches_per_epoch=2",
    "data.num_val=128",
    "data.num_test=128",
    "trainer.max_epochs=1",
]


def random_flow(**kwargs) -> CNF:
    """A 2-D flow whose untrained dynamics visibly move the base density."""
    torch.manual_seed(0)
    flow = create_cnf("cnf_concatsquash", (2,), dynamics={"hidden": [32, 32]}, **kwargs)
    with torch.no_grad():
        for layer in flow.func.dynamics.layers:
            layer.layer.weight.mul_(2.0)
    return flow


def test_density_integrates_to_one_on_a_grid() -> None:
    # Riemann sum of exp(log_prob) over [-7, 7]^2 at 0.07 spacing; the base N(0, I) puts 1e-11
    # of its mass outside, the solver runs at 1e-6: the sum must be 1 to within 2e-3.
    flow = random_flow(rtol=1e-6, atol=1e-6)
    axis, density, mass = density_grid(flow, extent=7.0, points=201)
    assert mass == pytest.approx(1.0, abs=2e-3)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    base = flow.base_log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).exp()
    moved = (density.reshape(-1) - base).abs().sum() * (axis[1] - axis[0]) ** 2
    assert moved > 0.2  # the flow is far from the identity: the test is not about N(0, I)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_mean_is_the_exact_trace(kind: str) -> None:
    torch.manual_seed(0)
    weight = torch.eye(32) + 0.5 * torch.randn(32, 32) / math.sqrt(32)  # dense, trace ≈ 20

    def dynamics(z: torch.Tensor) -> torch.Tensor:  # on image-shaped samples (2, 4, 4)
        return torch.tanh(z.flatten(1) @ weight.T).reshape(z.shape)

    point = torch.randn(1, 2, 4, 4)
    z = point.clone().requires_grad_(True)
    exact = divergence_exact(dynamics(z), z, create_graph=False)[0]  # 32 backward passes
    expected = ((1 - dynamics(point).flatten().square()) * weight.diagonal()).sum()
    assert exact == pytest.approx(expected.item(), rel=1e-5)
    z = point.expand(10_000, -1, -1, -1).clone().requires_grad_(True)  # one probe per copy
    estimates = divergence_hutchinson(dynamics(z), z, sample_probe(z, kind), False)
    stderr = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean() - exact) < 4 * stderr
    assert stderr < 0.05 * exact.abs()  # enough probes to tell a wrong mean apart


def test_rademacher_probes_are_exact_for_a_diagonal_jacobian() -> None:
    z = torch.randn(64, 5, requires_grad=True)
    scale = torch.linspace(-2, 2, 5)
    f = torch.tanh(z) * scale
    exact = divergence_exact(f, z, create_graph=False)
    assert torch.allclose(exact, ((1 - torch.tanh(z) ** 2) * scale).sum(1), atol=1e-6)
    estimate = divergence_hutchinson(f, z, sample_probe(z, "rademacher"), create_graph=False)
    assert torch.allclose(estimate, exact, atol=1e-6)  # ε_i² = 1: no variance at all


class LinearDynamics(nn.Module):
    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z @ self.a.T


def test_linear_flow_matches_the_closed_form() -> None:
    # dz/dt = Az: x = exp(A t1) z0, so log p(x) = log N(exp(-A t1) x) - t1 tr A.
    a = torch.tensor([[0.3, -0.8, 0.1], [0.5, -0.2, 0.0], [0.0, 0.4, 0.6]], dtype=torch.float64)
    flow = CNF(LinearDynamics(a), (3,), t1=1.5, base_std=0.7, rtol=1e-9, atol=1e-9).double()
    x = torch.randn(16, 3, dtype=torch.float64)
    z0 = x @ torch.linalg.matrix_exp(-1.5 * a).T
    expected = flow.base_log_prob(z0) - 1.5 * a.trace()
    assert torch.allclose(flow.log_prob(x), expected, atol=1e-6)


def test_log_prob_of_samples_matches_the_forward_change_of_variables() -> None:
    flow = random_flow(rtol=1e-6, atol=1e-6)
    torch.manual_seed(1)
    x, log_p_forward = flow.sample_with_log_prob(256)
    assert (flow.log_prob(x) - log_p_forward).abs().max() < 1e-3
    assert (log_p_forward - flow.base_log_prob(x)).abs().max() > 0.5  # a real transform
    # Hutchinson's backward estimate is unbiased: 500 probes per sample (one solve) average to it
    estimator = CNF(flow.func.dynamics, (2,), rtol=1e-6, atol=1e-6, divergence="hutchinson")
    many = estimator.log_prob(x[:8].repeat(500, 1)).reshape(500, 8).detach()
    stderr = many.std(0) / math.sqrt(len(many))
    assert (many.std(0) > 0.01).all()  # a single probe is not exact here
    assert ((many.mean(0) - log_p_forward[:8]).abs() < 4 * stderr + 1e-3).all()


@pytest.mark.parametrize(
    ("name", "shape"),
    [("cnf_hypernet", (2,)), ("cnf_concatsquash", (2,)), ("cnf_concatsquash", (1, 6, 6))],
)
def test_zero_dynamics_is_the_base_density(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    image = len(shape) == 3  # the trace is zero either way: Hutchinson and few channels, cheaper
    dynamics = {"zero_init": True, **({"hidden": [8]} if image else {})}
    divergence = "hutchinson" if image else "exact"
    flow = create_cnf(name, shape, dynamics=dynamics, base_std=0.5, divergence=divergence)
    x = torch.randn(32, *shape)
    zs, delta_log_p = flow.integrate(x, torch.tensor([flow.t1, 0.0]))
    assert torch.equal(delta_log_p[-1], torch.zeros(32))  # the trace is exactly zero
    # z(t0) = x up to float rounding (the solver's dense output re-mixes equal states)
    assert torch.allclose(flow.log_prob(x), flow.base_log_prob(x), rtol=1e-5, atol=1e-5)
    samples = flow.sample(8, torch.Generator().manual_seed(3))
    expected = flow.base_sample(8, torch.Generator().manual_seed(3))
    assert torch.allclose(samples, expected, rtol=0, atol=1e-6)
    flow.log_prob(x).mean().backward()  # not a saddle point: the zeroed layer gets gradients
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.parameters())


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_adjoint_gradients_match_direct_backprop(divergence: str) -> None:
    grads = []
    for adjoint in (False, True):
        flow = random_flow(rtol=1e-8, atol=1e-8, divergence=divergence, adjoint=adjoint).double()
        torch.manual_seed(2)  # the same Hutchinson probe in both
        flow.log_prob(torch.randn(8, 2, dtype=torch.float64)).sum().backward()
        grads.append([p.grad for p in flow.parameters()])
        if adjoint:
            assert flow.step_stats()["nfe_backward"] > 0
    for direct, adj in zip(*grads, strict=True):
        assert torch.allclose(direct, adj, atol=1e-5, rtol=1e-4)


def test_nfe_counts_reset_per_step() -> None:
    flow = random_flow()
    stats = []
    for _ in range(2):
        flow.reset_step_stats()
        flow.log_prob(torch.randn(4, 2)).sum().backward()
        stats.append(flow.step_stats())
    assert stats[0]["nfe_forward"] >= 8 and stats[0]["nfe_backward"] == 0  # dopri5, no adjoint
    assert stats[1] == stats[0]  # counts restart at each reset
    fixed = create_cnf("cnf_concatsquash", (2,), solver="rk4", step_size=0.25)
    fixed.log_prob(torch.randn(4, 2))
    assert fixed.step_stats()["nfe_forward"] == 16  # 4 steps of 4 evaluations


def test_evaluation_in_inference_mode_keeps_the_trace() -> None:
    flow = random_flow()
    x = torch.randn(16, 2)
    with torch.no_grad():
        expected = flow.log_prob(x)
    with torch.inference_mode():  # how Lightning's test loop runs
        assert torch.allclose(flow.log_prob(x.clone()), expected)


def test_logit_transform_log_det_is_the_jacobian() -> None:
    x = torch.rand(3, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    y, log_det = logit_transform(x, 1e-6)
    (slope,) = torch.autograd.grad(y.sum(), x)  # elementwise map: the Jacobian's diagonal
    assert torch.allclose(log_det, slope.log().reshape(3, -1).sum(1))
    assert torch.allclose(y, torch.logit(1e-6 + (1 - 2e-6) * x))


def test_toy_densities_are_normalized_and_match_their_samples() -> None:
    axis = torch.linspace(-6, 6, 201, dtype=torch.float64)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    for dataset in ("8gaussians", "moons", "circles"):
        mass = toy_log_prob(dataset, grid).exp().sum() * (axis[1] - axis[0]) ** 2
        assert mass == pytest.approx(1.0, abs=1e-6), dataset
    # 8 Gaussians of σ = 0.5/1.414: entropy log 8 + log(2πe σ²) nats (they barely overlap)
    x, label = toy_sample("8gaussians", 20_000, seed=1)
    entropy = math.log(8) + math.log(2 * math.pi * math.e * 0.125)
    assert -toy_log_prob("8gaussians", x).mean() == pytest.approx(entropy, abs=0.03)
    centre = x[label == 2].mean(0)  # the component at 90°
    assert torch.allclose(centre, torch.tensor([0.0, 4 / 1.414]), atol=0.03)


def test_toy_samples_are_seeded_and_checked() -> None:
    a, b = toy_sample("pinwheel", 100, seed=4), toy_sample("pinwheel", 100, seed=4)
    assert torch.equal(a[0], b[0]) and set(a[1].tolist()) <= set(range(5))
    with pytest.raises(UserError, match="data.dataset='spiral'"):
        toy_sample("spiral", 10)
    with pytest.raises(UserError, match="data.options for moons"):
        Toy2dDataModule("moons", options={"radius": 2})


def test_train_cnf_moons_writes_results_and_plots(tmp_path) -> None:
    results = run_train(tmp_path, TOY_TRAIN)
    assert results["model"] == "cnf_concatsquash" and results["dataset"] == "moons"
    assert results["global_steps"] == 2 and results["macs"] is None
    assert math.isfinite(results["best_val_nll"]) and math.isfinite(results["test_nll"])
    assert results["test_nfe"] >= 8
    # the data's own NLL on the same test points is the floor of any model's
    assert results["test_nll"] > results["data"]["test_nll_of_data_density"]
    assert results["density_mass_on_plot_grid"] == pytest.approx(1.0, abs=0.02)
    for name in ("density.png", "sample_flow.png", "sample_flow.gif"):
        assert (tmp_path / name).stat().st_size > 1000
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert "train/nfe_forward_epoch" in header and "val/nll" in header


def test_cnf_resume_refuses_other_flow_options(tmp_path) -> None:
    run_train(tmp_path, TOY_TRAIN)
    with pytest.raises(UserError, match="other model options"):
        run_train(tmp_path, [*TOY_TRAIN, "ckpt_path=last", "lightning_module.model_kwargs.t1=2.0"])


@pytest.mark.parametrize("name", ["cnf_circles", "cnf_8gaussians", "cnf_pinwheel", "cnf_fmnist"])
def test_experiments_compose(name: str) -> None:
    cfg = compose([f"experiment={name}", "output_dir=unused"])
    assert cfg.lightning_module._target_ == "zoo.flows.CNFDensityModule"
    assert "model" not in cfg and cfg.callbacks.best_checkpoint.monitor == "val/nll"


@needs_fmnist
def test_fashion_mnist_pixels_are_8_bit_at_lower_resolution() -> None:
    from zoo.flows.data import FashionMNISTPixels

    dm = FashionMNISTPixels(resolution=14, val_size=100, train_subset=200, batch_size=50)
    dm.setup("fit")
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (50, 1, 14, 14) and torch.equal(x, x.round())
    assert 0 <= x.min() and x.max() <= 255 and x.max() > 200
    assert dm.describe()["shape"] == [1, 14, 14] and dm.describe()["kind"] == "pixels"


@needs_fmnist
def test_train_image_cnf_reports_bits_per_dim(tmp_path) -> None:
    results = run_train(
        tmp_path,
        [
            "experiment=cnf_fmnist",
            "threads=1",
            "data.resolution=7",
            "data.train_subset=32",
            "data.val_size=16",
            "data.batch_size=16",
            "data.eval_batch_size=16",
            "lightning_module.model_kwargs.dynamics.hidden=[4]",
            "trainer.max_epochs=1",
            "trainer.limit_test_batches=1",
            "train.budget_s=null",
        ],
    )
    # one step from the start: about the logit-space N(0, I)'s ~20 bits/dim, far above any data's 8
    assert 8.0 < results["test_bits_per_dim"] < 40.0
    assert results["test_nll"] == pytest.approx(
        results["test_bits_per_dim"] * 49 * math.log(2), rel=1e-4
    )
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "sample_flow.png").is_file()
