"""ODE-Net: the continuous-depth ResNet, with the paper's ResNet and RK-Net baselines.

Chen, Rubanova, Bettencourt, Duvenaud, "Neural Ordinary Differential Equations", NeurIPS 2018,
arXiv:1806.07366, §3 and Table 1 (MNIST: ResNet 0.41% error / 0.60M params, RK-Net 0.47% / 0.22M,
ODE-Net 0.42% / 0.22M). The layout follows torchdiffeq's ``examples/odenet_mnist.py``: a
convolutional downsampler from 28×28 to 6×6 (64 channels), then either one ODE block
dh/dt = f(h, t) over t ∈ [0, 1] whose f is GroupNorm-ReLU-conv-GroupNorm-ReLU-conv-GroupNorm with t
concatenated as an extra channel before each conv, or six residual blocks (``resnet_mnist``), then
GroupNorm-ReLU-global pool-FC.

- ``odenet_mnist``: dopri5, rtol = atol = 1e-3, trained with the adjoint method (constant memory);
  208,266 parameters at 1 channel and 10 classes.
- ``rknet_mnist``: the same function integrated by fixed-step RK4, backpropagating through the
  solver's operations (the paper's RK-Net); the same 208,266 parameters (the paper's "0.22M").
- ``resnet_mnist``: residual downsampling and six residual blocks, 601,482 parameters (0.60M).

Each model counts the function evaluations of a training step: ``step_stats()`` returns the forward
and backward NFE (the paper's Fig. 3c/3d), ``reset_step_stats()`` zeroes them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from zoo.models.base import ZooModel, feature_modules, iter_stack, make_linear_head
from zoo.registry import ModelCfg, PaperNumbers, register_model

PAPER = "Neural Ordinary Differential Equations (Chen et al., NeurIPS 2018, arXiv:1806.07366)"
WIDTH = 64
ADAPTIVE_SOLVERS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_SOLVERS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")


def check_solver_options(solver: str, rtol: float, atol: float, step_size: float | None) -> None:
    """``ValueError`` naming the option for a torchdiffeq solver setting that cannot work."""
    if solver not in ADAPTIVE_SOLVERS + FIXED_SOLVERS:
        raise ValueError(
            f"solver must be one of {ADAPTIVE_SOLVERS + FIXED_SOLVERS}, got {solver!r}"
        )
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    if step_size is not None and not step_size > 0:
        raise ValueError(f"step_size must be > 0 (or null: one step per interval), got {step_size}")


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels)


class ConcatConv2d(nn.Module):
    """A 3×3 conv that also sees the time t as a constant extra input channel."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim_in + 1, dim_out, 3, padding=1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tt = torch.ones_like(x[:, :1]) * t
        return self.conv(torch.cat([tt, x], 1))


class ODEFunc(nn.Module):
    """f(t, h): GN-ReLU-ConcatConv-GN-ReLU-ConcatConv-GN; counts its evaluations."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(dim), ConcatConv2d(dim, dim)
        self.norm2, self.conv2 = group_norm(dim), ConcatConv2d(dim, dim)
        self.norm3 = group_norm(dim)
        self.relu = nn.ReLU(inplace=True)
        self.nfe = 0

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        out = self.conv1(t, self.relu(self.norm1(x)))
        out = self.conv2(t, self.relu(self.norm2(out)))
        return self.norm3(out)


class ODEBlock(nn.Module):
    """h(t1) = h(0) + ∫ f(h, t) dt, by ``solver`` (torchdiffeq), optionally with the adjoint."""

    def __init__(
        self,
        func: ODEFunc,
        solver: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-3,
        adjoint: bool = True,
        integration_time: float = 1.0,
        step_size: float | None = None,
    ) -> None:
        super().__init__()
        check_solver_options(solver, rtol, atol, step_size)
        if integration_time == 0:
            raise ValueError("integration_time must be nonzero (the block integrates over [0, t1])")
        self.func = func
        self.solver, self.rtol, self.atol = solver, rtol, atol
        self.adjoint = adjoint
        self.register_buffer(
            "times", torch.tensor([0.0, float(integration_time)]), persistent=False
        )
        self.options = {"step_size": step_size} if step_size is not None else None
        self.nfe_forward = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        solve = odeint_adjoint if self.adjoint and self.training else odeint
        before = self.func.nfe
        out = solve(
            self.func,
            x,
            self.times.to(x.dtype),
            rtol=self.rtol,
            atol=self.atol,
            method=self.solver,
            options=self.options,
        )[1]
        self.nfe_forward += self.func.nfe - before
        return out


class ResBlock(nn.Module):
    """Pre-activation residual block (GroupNorm), as in the paper's MNIST ResNet."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.norm1 = group_norm(inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Conv2d(inplanes, planes, 1, stride, bias=False)
            if stride != 1 or inplanes != planes
            else None
        )
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=1, bias=False)
        self.norm2 = group_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(x))
        shortcut = x if self.downsample is None else self.downsample(out)
        out = self.conv2(self.relu(self.norm2(self.conv1(out))))
        return out + shortcut


class ODENet(ZooModel):
    """Downsampler, feature stage (an ODE block or residual blocks), GN-ReLU-pool-FC head.

    Features: the downsampler at strides 1 and 2, and the feature stage's output (stride 4).
    """

    head_modules = ("norm", "fc")

    def __init__(
        self, feature: str = "ode", num_classes: int = 10, in_chans: int = 1, **ode_options
    ) -> None:
        super().__init__()
        if feature == "ode":
            self.downsampling = nn.Sequential(
                nn.Conv2d(in_chans, WIDTH, 3, 1),
                group_norm(WIDTH),
                nn.ReLU(inplace=True),
                nn.Conv2d(WIDTH, WIDTH, 4, 2, 1),
                group_norm(WIDTH),
                nn.ReLU(inplace=True),
                nn.Conv2d(WIDTH, WIDTH, 4, 2, 1),
            )
            self.features: nn.Module = ODEBlock(ODEFunc(WIDTH), **ode_options)
            taps = ("downsampling.2", "downsampling.5")
        else:
            self.downsampling = nn.Sequential(
                nn.Conv2d(in_chans, WIDTH, 3, 1),
                ResBlock(WIDTH, WIDTH, 2),
                ResBlock(WIDTH, WIDTH, 2),
            )
            self.features = nn.Sequential(*[ResBlock(WIDTH, WIDTH) for _ in range(6)])
            taps = ("downsampling.0", "downsampling.1")
        self.feature_info = [
            {"num_chs": WIDTH, "reduction": r, "module": m}
            for m, r in [(taps[0], 1), (taps[1], 2), ("features", 4)]
        ]
        self.norm = group_norm(WIDTH)
        self.relu = nn.ReLU(inplace=True)
        self.num_features = WIDTH
        self.num_classes = num_classes
        self.fc = make_linear_head(WIDTH, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.downsampling(x))

    def iter_features(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        taps = feature_modules(self.feature_info)
        x = yield from iter_stack(self.downsampling, x, taps, "downsampling")
        x = self.features(x)
        yield x
        yield x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.relu(self.norm(x)).mean((2, 3))
        return x if pre_logits else self.fc(x)

    def reset_step_stats(self) -> None:
        if isinstance(self.features, ODEBlock):
            self.features.func.nfe = 0
            self.features.nfe_forward = 0

    def step_stats(self) -> dict[str, float]:
        """Function evaluations since the last reset: forward pass(es) and backward pass."""
        if not isinstance(self.features, ODEBlock):
            return {}
        block = self.features
        return {
            "nfe_forward": block.nfe_forward,
            "nfe_backward": block.func.nfe - block.nfe_forward,
        }


def create_odenet(kind: str, num_classes: int, in_chans: int, **ode_options) -> ODENet:
    """``kind``: "ode" (any solver), "rk" (a fixed-step solver, backprop through it, the paper's
    RK-Net) or "res" (six residual blocks)."""
    if kind == "rk":
        solver = ode_options.get("solver")
        if solver not in FIXED_SOLVERS:
            raise ValueError(
                f"rknet_mnist needs a fixed-step solver {FIXED_SOLVERS}, got {solver!r}"
            )
        ode_options["adjoint"] = False
    feature = "res" if kind == "res" else "ode"
    return ODENet(feature, num_classes=num_classes, in_chans=in_chans, **ode_options)


def _cfg(
    params_m: float, mnist_error: float, params_exact: bool = True, min_size: int = 6
) -> ModelCfg:
    return ModelCfg(
        family="odenet",
        paper=PAPER,
        input_size=(1, 28, 28),
        num_classes=10,
        min_input_size=(1, min_size, min_size),
        first_conv="downsampling.0",
        reference="rtqichen/torchdiffeq examples/odenet_mnist.py",
        paper_numbers=PaperNumbers(
            source="Chen et al. 2018, Table 1",
            params_m=params_m,
            mnist_error=mnist_error,
            params_exact=params_exact,
            note="" if params_exact else "208,266 in torchdiffeq's example layout, which we follow",
        ),
    )


@register_model(_cfg(0.22, 0.42, params_exact=False))
def odenet_mnist(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    solver: str = "dopri5",
    rtol: float = 1e-3,
    atol: float = 1e-3,
    adjoint: bool = True,
    integration_time: float = 1.0,
    step_size: float | None = None,
) -> ODENet:
    """ODE-Net (Chen et al. 2018, Table 1): dopri5 ODE block with the adjoint; 208,266 params."""
    return create_odenet(
        kind="ode",
        num_classes=num_classes,
        in_chans=in_chans,
        solver=solver,
        rtol=rtol,
        atol=atol,
        adjoint=adjoint,
        integration_time=integration_time,
        step_size=step_size,
    )


@register_model(_cfg(0.22, 0.47, params_exact=False))
def rknet_mnist(
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    solver: str = "rk4",
    step_size: float = 0.25,
    integration_time: float = 1.0,
) -> ODENet:
    """RK-Net (Chen et al. 2018, Table 1): fixed-step RK4, backprop through the solver.

    Direct backprop is what defines RK-Net, so there is no ``adjoint`` option; ``solver`` takes
    torchdiffeq's fixed-grid methods (``euler`` with ``step_size=1`` is one residual block).
    """
    return create_odenet(
        kind="rk",
        num_classes=num_classes,
        in_chans=in_chans,
        solver=solver,
        integration_time=integration_time,
        step_size=step_size,
    )


@register_model(_cfg(0.60, 0.41, min_size=3))
def resnet_mnist(*, num_classes: int = 10, in_chans: int = 1) -> ODENet:
    """The paper's MNIST ResNet baseline (Table 1): six residual blocks; 601,482 params."""
    return create_odenet(kind="res", num_classes=num_classes, in_chans=in_chans)
