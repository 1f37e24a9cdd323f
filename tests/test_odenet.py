"""ODE-Net against Chen et al. 2018 and torchdiffeq's example: counts, Euler = ResNet step, adjoint
gradients, NFE counters."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.models.odenet import ODEBlock, ODEFunc


@pytest.mark.parametrize(
    ("name", "count"),
    [("odenet_mnist", 208_266), ("rknet_mnist", 208_266), ("resnet_mnist", 601_482)],
)
def test_param_counts(name: str, count: int) -> None:
    assert zoo.model_info(name)["num_params"] == count


def test_euler_step_of_one_is_the_residual_update() -> None:
    torch.manual_seed(0)
    func = ODEFunc(8)
    block = ODEBlock(func, solver="euler", step_size=1.0, adjoint=False).eval()
    h = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        expected = h + func(torch.tensor(0.0), h)
        assert (block(h) - expected).abs().max().item() < 1e-6


class SmoothFunc(torch.nn.Module):
    """A tiny smooth dynamics (conv + tanh): the adjoint's reverse solve is well conditioned."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.nfe = 0

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return torch.tanh(self.conv(h)) * (1 + t)


def test_adjoint_gradients_match_direct_backprop() -> None:
    torch.manual_seed(0)
    func = SmoothFunc().double()
    h = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        block = ODEBlock(func, rtol=1e-8, atol=1e-8, adjoint=adjoint).train()
        func.zero_grad()
        block(h).square().sum().backward()
        grads.append([p.grad.clone() for p in func.parameters()])
    for direct, adj in zip(*grads, strict=True):
        assert torch.allclose(direct, adj, atol=1e-4, rtol=1e-4)


def test_nfe_counts_reset_per_step() -> None:
    model = zoo.create_model("odenet_mnist").train()
    x = torch.randn(2, 1, 28, 28)
    stats = []
    for _ in range(2):
        model.reset_step_stats()
        model(x).sum().backward()
        stats.append(model.step_stats())
    assert stats[0]["nfe_forward"] >= 6 and stats[0]["nfe_backward"] > 0  # dopri5: 6 per step
    assert stats[1]["nfe_forward"] < 2 * stats[0]["nfe_forward"]  # not accumulated
    direct = zoo.create_model("rknet_mnist").train()
    direct.reset_step_stats()
    direct(x).sum().backward()
    # RK4 with step 0.25 over [0, 1]: 4 steps x 4 evaluations; no evaluations in backward
    assert direct.step_stats() == {"nfe_forward": 16, "nfe_backward": 0}


def test_tighter_tolerance_costs_more_evaluations() -> None:
    x = torch.randn(2, 1, 28, 28)
    nfe = []
    for tol in (1e-1, 1e-5):
        torch.manual_seed(0)
        model = zoo.create_model("odenet_mnist", rtol=tol, atol=tol).eval()
        model.reset_step_stats()
        with torch.no_grad():
            model(x)
        nfe.append(model.step_stats()["nfe_forward"])
    assert nfe[1] > nfe[0]
