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

Graphs: ``torch.fx`` records the ODE block as one call (a leaf module, as timm's feature extraction
marks modules it cannot trace), so ``torch.fx.symbolic_trace`` and torchvision's
``create_feature_extractor`` work on every model. ``torch.export`` cannot trace torchdiffeq (its
step control reads tensor values in Python), so under export the block integrates with
``integrate_in_graph``: the same steps in tensor operations, the adaptive loop as a
``while_loop`` whose number of iterations depends on the input, as it must (§3).
"""

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch._higher_order_ops.while_loop import while_loop
from torchdiffeq import odeint, odeint_adjoint
from torchdiffeq._impl.interp import _interp_fit
from torchdiffeq._impl.misc import Perturb, _compute_error_ratio, _rms_norm
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver

from zoo.models.base import (
    GlobalPool,
    ZooModel,
    checkpoint,
    checkpoint_seq,
    feature_modules,
    iter_stack,
    make_linear_head,
)
from zoo.models.registry import ModelCfg, PaperNumbers, register_model

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
        if not torch.compiler.is_compiling():  # a graph has no Python counter to update
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
        self.integration_time = float(integration_time)
        self.step_size = step_size
        self.register_buffer(
            "times", torch.tensor([0.0, float(integration_time)]), persistent=False
        )
        self.options = {"step_size": step_size} if step_size is not None else None
        self.nfe_forward = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if isinstance(x, torch.fx.Proxy):  # torch.fx: one call_module node, not traced into
                tracer = x.tracer
                return tracer.create_proxy("call_module", tracer.path_of_module(self), (x,), {})
            if torch.compiler.is_exporting():
                return integrate_in_graph(
                    self.func,
                    x,
                    self.integration_time,
                    self.solver,
                    self.rtol,
                    self.atol,
                    self.step_size,
                )
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


# ---- integration in tensor operations (torch.export) --------------------------------------------
#
# torchdiffeq's solvers, step for step: the same Butcher tableaus and error norm (imported from
# torchdiffeq), the same step-size rule (Hairer et al., Solving ODEs I, §II.4) and interpolation
# to the end time; the branches on tensor values become ``torch.where`` and the adaptive loop a
# ``while_loop``. tests/test_odenet.py checks it against torchdiffeq (outputs and evaluations).

GRAPH_SOLVERS = ("euler", "midpoint", "heun2", "heun3", "rk4", *ADAPTIVE_SOLVERS)


def _tableau_flags(method: type[RKAdaptiveStepsizeODESolver]) -> tuple[list[bool], bool]:
    """Per stage, whether it is evaluated at the step's end (alpha = 1); whether the last stage
    is the solution (torchdiffeq's shortcut, true for dopri5). Read once, outside any graph."""
    tableau = method.tableau
    c_sol, last_beta = tableau.c_sol.float(), tableau.beta[-1].float()
    last_stage = bool(c_sol[-1] == 0 and (c_sol[:-1] == last_beta).all())
    return [a == 1.0 for a in tableau.alpha.float().tolist()], last_stage


_TABLEAU_FLAGS = {SOLVERS[name]: _tableau_flags(SOLVERS[name]) for name in ADAPTIVE_SOLVERS}


def _evaluate(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    t: torch.Tensor,
    y: torch.Tensor,
    perturb: Perturb = Perturb.NONE,
) -> torch.Tensor:
    """``func(t, y)`` as torchdiffeq calls it: t in y's dtype, nudged to the neighbouring float
    when the step ends on a time point (its ``Perturb``)."""
    t = t.to(y.dtype)
    if perturb is Perturb.NEXT:
        t = torch.nextafter(t, t + 1)
    elif perturb is Perturb.PREV:
        t = torch.nextafter(t, t - 1)
    return func(t, y)


def _loop(cond: Callable[..., torch.Tensor], body: Callable[..., tuple], state: tuple) -> tuple:
    """``while cond(*state): state = body(*state)``: a ``while_loop`` in a graph, else Python."""
    if torch.compiler.is_compiling():
        return tuple(while_loop(cond, body, state))
    while bool(cond(*state)):
        state = tuple(body(*state))
    return state


def integrate_in_graph(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t1: float,
    solver: str,
    rtol: float,
    atol: float,
    step_size: float | None = None,
) -> torch.Tensor:
    """y(t1) for dy/dt = func(t, y), y(0) = y0, as ``torchdiffeq.odeint`` computes it, in tensor
    operations only (capturable by ``torch.export``)."""
    if solver not in GRAPH_SOLVERS:
        raise ValueError(
            f"solver {solver!r} (a multistep method) has no graph form here; export with one of "
            f"{GRAPH_SOLVERS}"
        )
    if solver in ADAPTIVE_SOLVERS:
        return _integrate_adaptive(func, y0, t1, SOLVERS[solver], rtol, atol)
    return _integrate_fixed(func, y0, t1, solver, step_size)


def fixed_grid(t1: float, step_size: float | None) -> list[float]:
    """torchdiffeq's time grid in float32 (the models' dtype): 0, h, 2h, … for ceil(t1/h + 1)
    points, the last one moved onto t1; Python numbers, so that the loop unrolls in a graph."""
    if step_size is None:
        return [0.0, float(np.float32(t1))]
    end, step = np.float32(t1), np.float32(step_size)
    steps = math.ceil(float(end / step + np.float32(1)))
    grid = [float(np.float32(i) * step) for i in range(steps)]
    grid[-1] = float(end)
    return grid


def _integrate_fixed(
    func: Callable, y0: torch.Tensor, t1: float, solver: str, step_size: float | None
) -> torch.Tensor:
    """A fixed-grid solver: torchdiffeq's step function over its grid."""
    times = fixed_grid(t1, step_size)
    stepper = SOLVERS[solver](func=func, y0=y0, step_size=step_size, atol=0.0)
    y = y0
    for a, b in zip(times[:-1], times[1:], strict=True):
        ta = torch.tensor(a, dtype=y0.dtype)
        tb = torch.tensor(b, dtype=y0.dtype)
        dy, _ = stepper._step_func(
            lambda t, y, perturb=Perturb.NONE: _evaluate(func, t, y, perturb), ta, tb - ta, tb, y
        )
        y = y + dy
    return y


def _integrate_adaptive(
    func: Callable,
    y0: torch.Tensor,
    t1: float,
    method: type[RKAdaptiveStepsizeODESolver],
    rtol: float,
    atol: float,
) -> torch.Tensor:
    """An embedded Runge-Kutta pair with step-size control (dopri5, …), as torchdiffeq's
    ``RKAdaptiveStepsizeODESolver`` with its default options."""
    tableau, order = method.tableau, method.order
    stage_ends_step, last_stage_is_solution = _TABLEAU_FLAGS[method]
    alpha = tableau.alpha.to(y0.dtype)
    beta = [b.to(y0.dtype) for b in tableau.beta]
    c_sol, c_error = tableau.c_sol.to(y0.dtype), tableau.c_error.to(y0.dtype)
    mid = method.mid.to(y0.dtype)
    time = torch.float64  # torchdiffeq keeps time-like values in float64
    rtol_t, atol_t = torch.tensor(rtol, dtype=time), torch.tensor(atol, dtype=time)
    safety, ifactor, dfactor = (torch.tensor(v, dtype=time) for v in (0.9, 10.0, 0.2))
    t_end = torch.tensor(t1, dtype=y0.dtype).to(time)
    t_start = torch.zeros((), dtype=time)

    f0 = _evaluate(func, t_start, y0)
    dt = _initial_step(func, t_start, y0, f0, order - 1, rtol_t, atol_t)

    def cond(t0, t, y, f, dt, *coeffs):
        return t_end > t

    def body(t0, t, y, f, dt, *coeffs):
        dt = torch.where(torch.isfinite(dt), dt, torch.zeros_like(dt)).clamp(min=0)
        t_next = t + dt
        # one Runge-Kutta step (torchdiffeq's _runge_kutta_step), times in y's dtype
        ts, dts, t_nexts = t.to(y.dtype), dt.to(y.dtype), t_next.to(y.dtype)
        k = [f]
        y_stage = y
        for i, (ends_step, beta_i) in enumerate(zip(stage_ends_step, beta, strict=True)):
            y_stage = y + torch.sum(torch.stack(k, -1) * (beta_i * dts), dim=-1).view_as(f)
            if ends_step:
                k.append(_evaluate(func, t_nexts, y_stage, Perturb.PREV))
            else:
                k.append(_evaluate(func, ts + alpha[i] * dts, y_stage))
        stages = torch.stack(k, -1)
        if not last_stage_is_solution:
            y_stage = y + torch.sum(stages * (dts * c_sol), dim=-1).view_as(f)
        y_new, f_new = y_stage, stages[..., -1]
        error = torch.sum(stages * (dts * c_error), dim=-1)
        ratio = _compute_error_ratio(error, rtol_t, atol_t, y, y_new, _rms_norm)
        accept = (ratio <= 1) | (dt <= 0)
        y_mid = y + torch.sum(stages * (dts * mid), dim=-1).view_as(y)
        fitted = _interp_fit(y, y_new, y_mid, stages[..., 0], stages[..., -1], dts)
        coeffs = [torch.where(accept, new, old) for new, old in zip(fitted, coeffs, strict=True)]
        return (
            t.clone(),  # a while_loop's outputs may not alias its inputs
            torch.where(accept, t_next, t),
            torch.where(accept, y_new, y),
            torch.where(accept, f_new, f),
            _next_step(dt, ratio, safety, ifactor, dfactor, order).clamp(min=0),
            *coeffs,
        )

    coeffs = [torch.zeros_like(y0) for _ in range(5)]  # filled by the first accepted step
    t0, t, _, _, _, *coeffs = _loop(cond, body, (t_start, t_start.clone(), y0, f0, dt, *coeffs))
    x = ((t_end - t0) / (t - t0)).to(y0.dtype)  # torchdiffeq's 4th-order interpolation at t1
    total, power = coeffs[0] + x * coeffs[1], x
    for coefficient in coeffs[2:]:
        power = power * x
        total = total + power * coefficient
    return total


def _initial_step(
    func: Callable,
    t0: torch.Tensor,
    y0: torch.Tensor,
    f0: torch.Tensor,
    order: int,
    rtol: torch.Tensor,
    atol: torch.Tensor,
) -> torch.Tensor:
    """torchdiffeq's first step size (Hairer et al., §II.4), its branches as ``torch.where``."""
    scale = atol + torch.abs(y0) * rtol
    d0, d1 = _rms_norm(y0 / scale).abs(), _rms_norm(f0 / scale).abs()
    tiny = torch.tensor(1e-6, dtype=y0.dtype)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), tiny, 0.01 * d0 / d1).abs()
    f1 = _evaluate(func, t0 + h0, y0 + h0 * f0)
    d2 = torch.abs(_rms_norm((f1 - f0) / scale) / h0)
    flat = (d1 <= 1e-15) & (d2 <= 1e-15)
    h1 = torch.where(
        flat, torch.maximum(tiny, h0 * 1e-3), (0.01 / torch.maximum(d1, d2)) ** (1.0 / (order + 1))
    ).abs()
    return torch.minimum(100 * h0, h1).to(t0.dtype)


def _next_step(
    dt: torch.Tensor,
    ratio: torch.Tensor,
    safety: torch.Tensor,
    ifactor: torch.Tensor,
    dfactor: torch.Tensor,
    order: int,
) -> torch.Tensor:
    """torchdiffeq's step-size update, its branches as ``torch.where``."""
    shrink = torch.where(ratio < 1, torch.ones_like(dfactor), dfactor)
    ratio = ratio.to(dt.dtype)
    factor = torch.minimum(ifactor, torch.maximum(safety / ratio ** (1.0 / order), shrink))
    return torch.where(ratio == 0, dt * ifactor, dt * factor)


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
    The head's pooling is ``global_pool``. Gradient checkpointing recomputes the downsampler's
    layers and each residual block, and the ODE block when it backpropagates through the solver
    (RK-Net); with the adjoint method it already stores nothing inside. The recomputed solver
    calls count as forward evaluations in ``step_stats``.
    """

    head_modules = ("norm", "global_pool", "fc")

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
        self.global_pool = GlobalPool("avg")
        self.num_features = WIDTH
        self.num_classes = num_classes
        self.fc = make_linear_head(WIDTH, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self._forward_features_checkpointed(x)
        return self.features(self.downsampling(x))

    def _forward_features_checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        x = checkpoint_seq([self.downsampling], x)  # one piece: its ReLUs work in place
        if not isinstance(self.features, ODEBlock):
            return checkpoint_seq(self.features, x)
        if self.features.adjoint and self.training:
            return self.features(x)
        return checkpoint(self.features, [], x)

    def iter_features(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        taps = feature_modules(self.feature_info)
        x = yield from iter_stack(self.downsampling, x, taps, "downsampling")
        x = self.features(x)
        yield x
        yield x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(self.relu(self.norm(x)))
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
    params_m: float,
    mnist_error: float,
    params_exact: bool = True,
    min_size: int = 6,
    pool_size: tuple[int, int] = (6, 6),
) -> ModelCfg:
    return ModelCfg(
        family="odenet",
        paper=PAPER,
        input_size=(1, 28, 28),
        num_classes=10,
        min_input_size=(1, min_size, min_size),
        pool_size=pool_size,
        first_conv="downsampling.0",
        data="mnist",
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


@register_model(_cfg(0.60, 0.41, min_size=3, pool_size=(7, 7)))
def resnet_mnist(*, num_classes: int = 10, in_chans: int = 1) -> ODENet:
    """The paper's MNIST ResNet baseline (Table 1): six residual blocks; 601,482 params."""
    return create_odenet(kind="res", num_classes=num_classes, in_chans=in_chans)
