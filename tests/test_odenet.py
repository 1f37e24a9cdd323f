"""ODE-Net against Chen et al. 2018 and torchdiffeq's example: counts, Euler = ResNet step, adjoint
gradients, NFE counters."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.models.odenet import (
    ADAPTIVE_SOLVERS,
    GRAPH_SOLVERS,
    ConcatConv2d,
    ODEBlock,
    ODEFunc,
    fixed_grid,
    integrate_in_graph,
)


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
    """A tiny smooth dynamics (time-concatenating conv + tanh). The zoo's GroupNorm-ReLU function
    at this size is too stiff for a 1e-4 comparison: its reverse solve needs ~20k evaluations."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = ConcatConv2d(3, 3)
        self.nfe = 0

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return torch.tanh(self.conv(t, h))


def test_adjoint_gradients_match_direct_backprop() -> None:
    torch.manual_seed(0)
    func = SmoothFunc().double()
    h0 = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        block = ODEBlock(func, rtol=1e-8, atol=1e-8, adjoint=adjoint).train()
        func.zero_grad()
        h = h0.clone().requires_grad_(True)
        block(h).square().sum().backward()
        grads.append([h.grad, *(p.grad.clone() for p in func.parameters())])
    assert len(grads[1]) == 3  # input, conv weight, conv bias: the adjoint state and dL/dtheta
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


@pytest.mark.parametrize("name", ["odenet_mnist", "rknet_mnist", "resnet_mnist"])
def test_three_channel_input_trains(name: str) -> None:
    model = zoo.create_model(name, in_chans=3, num_classes=7).train()
    out = model(torch.randn(2, 3, 28, 28))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert model.downsampling[0].weight.grad.shape[1] == 3


def test_eval_mode_backprops_through_the_solver() -> None:
    """In eval mode (attacks, Hessian-vector products) gradients come from direct backprop:
    no reverse solve (backward NFE 0), and double backward works."""
    model = zoo.create_model("odenet_mnist", solver="rk4", step_size=0.5).eval()
    model.reset_step_stats()
    x = torch.randn(2, 1, 28, 28, requires_grad=True)
    (grad,) = torch.autograd.grad(model(x).logsumexp(1).sum(), x, create_graph=True)
    grad.square().sum().backward()
    assert model.step_stats() == {"nfe_forward": 8, "nfe_backward": 0}
    assert model.fc.weight.grad is not None


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("odenet_mnist", {"solver": "dopri6"}, "solver must be one of"),
        ("odenet_mnist", {"rtol": 0.0}, "rtol and atol must be > 0"),
        ("odenet_mnist", {"solver": "euler", "step_size": -0.1}, "step_size must be > 0"),
        ("odenet_mnist", {"integration_time": 0.0}, "integration_time must be nonzero"),
        ("rknet_mnist", {"solver": "dopri5"}, "needs a fixed-step solver"),
    ],
)
def test_bad_solver_options_fail_clearly(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        zoo.create_model(name, **kwargs)


def test_rknet_euler_step_one_matches_odenet_euler() -> None:
    """The RK-Net builder's solver option reaches the block: Euler, one step of 1 = one update."""
    x = torch.randn(2, 1, 28, 28)
    outs = []
    for name, kwargs in [
        ("rknet_mnist", {"solver": "euler", "step_size": 1.0}),
        ("odenet_mnist", {"solver": "euler", "step_size": 1.0}),
    ]:
        torch.manual_seed(0)
        model = zoo.create_model(name, **kwargs).eval()
        model.reset_step_stats()
        with torch.no_grad():
            outs.append(model(x))
        assert model.step_stats()["nfe_forward"] == 1
    assert torch.equal(outs[0], outs[1])


def test_benchmark_rewrites_only_its_table(tmp_path) -> None:
    from zoo.bench.odenet import markdown_table
    from zoo.io import write_marked_block

    BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
    doc = tmp_path / "odenet.md"
    doc.write_text(f"intro\n{BEGIN}\nold table\n{END}\noutro\n")
    rows = [
        {"tol": t, "adjoint": a, "nfe_forward": 20, "nfe_backward": 32 if a else 0,
         "saved_MiB": 15.0 if a else 66.0 + t, "step_s": 1.0}
        for t in (1e-1, 1e-3) for a in (True, False)
    ]  # fmt: skip
    write_marked_block(doc, "bench", markdown_table(rows))
    text = doc.read_text()
    assert text.startswith(f"intro\n{BEGIN}\n| rtol") and text.endswith(f"\n{END}\noutro\n")
    assert "old table" not in text and "RSS" not in text  # no RSS columns without RSS probes
    assert "| 1e-1 | 20 | 32 | 15.00 | 66.1 | 1.00 s | 1.00 s |" in text
    assert text.index("| 1e-1 |") < text.index("| 1e-3 |")


@pytest.mark.parametrize(
    ("solver", "tol"), [*((s, 1e-3) for s in GRAPH_SOLVERS), ("dopri5", 1e-6), ("bosh3", 1e-6)]
)
def test_graph_integration_takes_torchdiffeqs_steps(solver: str, tol: float) -> None:
    """``integrate_in_graph`` (what ``torch.export`` captures) against torchdiffeq: the same
    result and the same number of function evaluations, so the same accepted and rejected
    steps, for the zoo's dynamics (tolerances matter to the adaptive solvers only)."""
    torch.manual_seed(0)
    func = ODEFunc(8)
    with torch.no_grad():  # non-zero norm affines: less regular dynamics than at initialisation
        for norm in (func.norm1, func.norm2, func.norm3):
            norm.weight.uniform_(0.5, 2.0)
    step = None if solver in ADAPTIVE_SOLVERS else 0.3
    block = ODEBlock(func, solver=solver, rtol=tol, atol=tol, step_size=step).eval()
    h = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        func.nfe = 0
        expected = block(h)
        nfe_torchdiffeq, func.nfe = func.nfe, 0
        got = integrate_in_graph(func, h, 1.0, solver, tol, tol, step)
    assert func.nfe == nfe_torchdiffeq
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_fixed_grid_is_torchdiffeqs() -> None:
    assert fixed_grid(1.0, 0.25) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert fixed_grid(1.0, 0.3) == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0])
    assert fixed_grid(1.0, None) == [0.0, 1.0]


def test_multistep_solvers_have_no_graph_form() -> None:
    with pytest.raises(ValueError, match="has no graph form here; export with one of"):
        integrate_in_graph(ODEFunc(8), torch.randn(1, 8, 4, 4), 1.0, "implicit_adams", 1e-3, 1e-3)
