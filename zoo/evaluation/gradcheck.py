"""Are a model's gradients right? (``python evaluate.py task=gradcheck model=NAME``)

The gradient check of Goodfellow, Bengio & Courville (2016, §11.5): autograd's gradients against
centred finite differences ``(f(θ + ε) - f(θ - ε)) / 2ε`` in float64 on a tiny input, for every
parameter and for the input, of the scalar ``f = Σ w ⊙ logits`` with fixed random weights ``w``.
The model runs as in training (train mode: BatchNorm on batch statistics, ODE-Net through the
adjoint) with dropout off, since a random mask differs between evaluations. ODE blocks integrate
on a fixed grid (``task.ode_solver``, ``task.ode_step``): an adaptive solver's output is not a
smooth function of the parameters (its accepted steps move with them), so differences through it
measure the step-size controller (odenet_mnist at rtol = atol = 1e-9: differences from -0.418 to
-0.533 for a gradient of -0.403). On a fixed grid the differences match direct backpropagation to
9 digits, and the adjoint's gradient (the adjoint ODE solved backwards on the grid) differs from
them by its discretisation error: 8.0e-3 of the gradient's norm at step 0.05, 6.7e-4 at 0.01,
2.2e-4 at 0.005; the default step 0.001 keeps every module's worst error below 1e-4.

Two checks, both in float64 with the same ``eps``, ``atol`` and ``rtol``:

- ``torch.autograd.gradcheck`` in its fast mode (Jacobian-vector products along random directions)
  over the input and all parameters at once: torch's own verdict;
- a sampled check per module (``task.samples`` coordinates of its parameters, half of them those
  with the largest gradients, half random): the worst relative error ``|a - n| / max(|a|, |n|)``
  of each module, printed as a table and written to ``gradcheck.json``. A coordinate passes when
  ``|a - n| <= atol + rtol·|n|`` (gradcheck's rule).

A coordinate that fails is measured again, because a failing difference has two innocent causes
besides a wrong backward. Kinks: a ReLU network is piecewise smooth, and a ``±eps`` that crosses a
ReLU or max-pool kink measures the jump. Autograd's gradient is the derivative of the piece the
unperturbed point lies in, so the re-measurement freezes the activation pattern (every ReLU keeps
the mask and every max-pool the argmax of the unperturbed pass: :func:`freeze_activation_pattern`),
which leaves the value and the gradient at the point unchanged and removes the kinks around it.
Exploding gradients: deep plain nets with BatchNorm reach gradients of 1e8 on an output of order 1
at initialisation (resnet110_noshort; Yang et al., "A Mean Field Theory of Batch Normalization",
ICLR 2019), so the function curves on a scale of 1e-9 and a difference at 1e-6 measures the curve.
The re-measurement therefore divides the step by 10 until three successive differences agree within
the tolerance (down to ``SMALLEST_STEP``; else the two that agree best, the tolerance widened by
their gap) and compares the converged value. Neither looks at
autograd's value, so a wrong backward still fails: the differences converge to the true gradient.

A wrong backward shows in the module that has it and in every module before it (its error reaches
them through the chain rule); the modules after it stay right, so the last failing module (in the
order the model defines them, usually the forward order) is the suspect.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import accumulate
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.gradcheck import GradcheckError, gradcheck
from torch.overrides import TorchFunctionMode

from zoo.errors import UserError
from zoo.evaluation.tables import markdown_table
from zoo.models.registry import get_model_entry
from zoo.training.debug import set_dropout
from zoo.weights.factory import create_model

# The smallest step of a re-measurement: below it float64 roundoff (1e-16 of the output, amplified
# by the gradient) dominates the difference.
SMALLEST_STEP = 1e-13

# Evaluations of the checked function in torch's fast mode (the output, then two per input along
# one direction: 5 here); more means torch has gone on to slow mode to describe a failure.
FAST_MODE_CALLS = 16


class _SlowModeStarted(Exception):
    """torch's fast gradcheck failed and began its full-Jacobian slow mode."""


class _ActivationPattern(TorchFunctionMode):
    """Records the ReLU masks and max-pool argmaxes of a forward pass, then replays them:
    ``relu(x)`` becomes ``x * mask`` and ``max_pool2d(x)`` gathers ``x`` at the recorded indices,
    in call order (``nn.ReLU``, ``F.relu``, ``Tensor.relu`` and ``nn.MaxPool2d`` all get here)."""

    RELU = frozenset({F.relu, torch.relu, torch.Tensor.relu})
    RELU_INPLACE = frozenset({F.relu_, torch.relu_, torch.Tensor.relu_})

    def __init__(self) -> None:
        super().__init__()
        self.choices: list[torch.Tensor] = []
        self.replaying = False
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.RELU or func in self.RELU_INPLACE:
            x = args[0]
            inplace = func in self.RELU_INPLACE or kwargs.get("inplace", False)
            if not self.replaying:
                self.choices.append(x > 0)
                return func(*args, **kwargs)
            mask = self._next(x)
            return x.mul_(mask) if inplace else x * mask
        if func is F.max_pool2d:
            x = args[0]
            if not self.replaying:
                out, indices = func(*args, **{**kwargs, "return_indices": True})
                self.choices.append(indices)
            else:
                indices = self._next(x)
                out = x.flatten(2).gather(2, indices.flatten(2)).view(indices.shape)
            return (out, indices) if kwargs.get("return_indices") else out
        return func(*args, **kwargs)

    def _next(self, x: torch.Tensor) -> torch.Tensor:
        if self.calls >= len(self.choices) or self.choices[self.calls].shape[:2] != x.shape[:2]:
            raise RuntimeError("the forward pass took another path than the recorded one")
        self.calls += 1
        return self.choices[self.calls - 1]

    @contextmanager
    def replay(self) -> Iterator[None]:
        self.replaying, self.calls = True, 0
        with self:
            yield
        if self.calls != len(self.choices):
            raise RuntimeError("the forward pass took another path than the recorded one")


def freeze_activation_pattern(f: Callable[..., torch.Tensor], *args) -> Callable[..., torch.Tensor]:
    """``f`` with the ReLU masks and max-pool choices of ``f(*args)`` frozen: the same value and
    gradient at ``args``, and smooth around them (no kink for a finite difference to cross)."""
    pattern = _ActivationPattern()
    with torch.no_grad(), pattern:
        f(*args)

    def frozen(*a):
        with pattern.replay():
            return f(*a)

    return frozen


def _main(out: torch.Tensor | tuple) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # GoogLeNet's aux outputs in train mode


def _sample(grad: torch.Tensor, samples: int, gen: torch.Generator) -> torch.Tensor:
    """Flat indices to check: all of a small tensor, else its largest-|gradient| coordinates and as
    many random ones (a gradient wrongly zero hides from the first kind, not from the second)."""
    n = grad.numel()
    if n <= samples:
        return torch.arange(n)
    top = grad.abs().flatten().topk((samples + 1) // 2).indices
    rest = torch.randperm(n, generator=gen)[: samples + len(top)]
    rest = rest[~torch.isin(rest, top)][: samples - len(top)]
    return torch.cat([top, rest])


# Moves the point to ``base + t * direction`` (t = 0 restores it exactly).
Shift = Callable[[float], None]


def _coordinate(tensor: torch.Tensor, i: int) -> Shift:
    flat, base = tensor.view(-1), tensor.view(-1)[i].item()

    def shift(t: float) -> None:
        flat[i] = base + t

    return shift


def _direction(tensors: list[torch.Tensor], directions: list[torch.Tensor]) -> Shift:
    bases = [t.clone() for t in tensors]

    def shift(t: float) -> None:
        for tensor, base, direction in zip(tensors, bases, directions, strict=True):
            tensor.copy_(base + t * direction)

    return shift


@torch.no_grad()
def _central_differences(
    f: Callable[[], torch.Tensor], shifts: list[Shift], eps: float
) -> torch.Tensor:
    """``(f(v + eps) - f(v - eps)) / 2 eps`` along each shift (a coordinate or a direction)."""
    numerical = torch.empty(len(shifts), dtype=torch.float64)
    for j, shift in enumerate(shifts):
        shift(eps)
        plus = f().item()
        shift(-eps)
        minus = f().item()
        shift(0.0)
        numerical[j] = (plus - minus) / (2 * eps)
    return numerical


def _steps(eps: float) -> list[float]:
    """``eps``, ``eps / 10``, ... down to ``SMALLEST_STEP``."""
    steps = [eps]
    while steps[-1] / 10 >= SMALLEST_STEP * (1 - 1e-9):
        steps.append(steps[-1] / 10)
    return steps


def _converged_differences(
    f: Callable[[], torch.Tensor],
    shifts: list[Shift],
    eps: float,
    atol: float,
    rtol: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of ``f`` at ``eps``, ``eps/10``, ... and their uncertainty, chosen by
    the differences alone (never by the value they are compared with): for each coordinate the
    first difference that agrees within the tolerance with the two before it (converged), else the
    one that agrees best with the one before it (where the step is small enough for the curve and
    large enough for roundoff). The uncertainty is its gap to the difference before it."""
    older = torch.full((len(shifts),), float("nan"), dtype=torch.float64)
    previous = _central_differences(f, shifts, eps)
    result, gap = previous.clone(), torch.full_like(previous, float("inf"))
    pending = list(range(len(shifts)))
    for step in _steps(eps)[1:]:
        current = _central_differences(f, [shifts[j] for j in pending], step)
        new_gap = (current - previous[pending]).abs()
        better = new_gap < gap[pending]
        result[pending] = torch.where(better, current, result[pending])
        gap[pending] = torch.where(better, new_gap, gap[pending])
        converged = (
            _within(current, previous[pending], atol, rtol)
            & _within(previous[pending], older[pending], atol, rtol)
        ).tolist()
        older[pending], previous[pending] = previous[pending], current
        pending = [j for j, done in zip(pending, converged, strict=True) if not done]
        if not pending:
            break
    return result, gap


def _check_tensors(
    f: Callable[[], torch.Tensor],
    frozen: Callable[[], torch.Tensor],
    tensors: list[torch.Tensor],
    grads: list[torch.Tensor],
    samples: int,
    gen: torch.Generator,
    tolerances: tuple[float, float, float],
) -> dict[str, Any]:
    """The sampled check of some tensors taken together (one module's parameters, or the input):
    the worst relative error, whether every coordinate passed, how many were checked and how many
    of them failed at ``eps`` and passed when measured again (frozen pattern, converged step)."""
    flat_grad = torch.cat([g.flatten() for g in grads])
    starts = list(accumulate([0, *(t.numel() for t in tensors)]))
    picked = _sample(flat_grad, samples, gen).tolist()
    shifts = []
    for i in picked:
        k = bisect_right(starts, i) - 1
        shifts.append(_coordinate(tensors[k].data, i - starts[k]))
    return {"params": starts[-1], **_compare(f, frozen, shifts, flat_grad[picked], tolerances)}


def _compare(
    f: Callable[[], torch.Tensor],
    frozen: Callable[[], torch.Tensor],
    shifts: list[Shift],
    analytical: torch.Tensor,
    tolerances: tuple[float, float, float],
) -> dict[str, Any]:
    """Autograd's derivatives along ``shifts`` against differences at ``eps``, the failing ones
    re-measured: the worst relative error, whether all passed, how many were re-measured."""
    eps, atol, rtol = tolerances
    numerical = _central_differences(f, shifts, eps)
    uncertainty = torch.zeros_like(numerical)
    redo = (~_within(analytical, numerical, atol, rtol)).nonzero().flatten().tolist()
    if redo:  # a kink or a steep curve within eps, or a wrong backward
        again = [shifts[j] for j in redo]
        numerical[redo], uncertainty[redo] = _converged_differences(frozen, again, eps, atol, rtol)
    passed = _within(analytical, numerical, atol, rtol, uncertainty)
    diff = (analytical - numerical).abs()
    scale = torch.maximum(analytical.abs(), numerical.abs()).clamp_min(atol)
    return {
        "checked": len(shifts),
        "remeasured": int(passed[redo].sum()),
        "worst_rel_error": float((diff / scale).max()),
        "passed": bool(passed.all()),
    }


def _compare_along_random_direction(
    f: Callable[[], torch.Tensor],
    frozen: Callable[[], torch.Tensor],
    x: torch.Tensor,
    model: nn.Module,
    gen: torch.Generator,
    tolerances: tuple[float, float, float],
) -> dict[str, Any]:
    """torch's fast-mode check, re-measured: autograd's derivative of ``f`` along one random unit
    direction of the input and all parameters against the differences along it."""
    everything = [x, *(p for p in model.parameters() if p.requires_grad)]
    directions = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in everything]
    norm = torch.sqrt(sum((d**2).sum() for d in directions))
    directions = [d / norm for d in directions]
    analytical = sum(
        (t.grad * d).sum() for t, d in zip(everything, directions, strict=True)
        if t.grad is not None
    )  # fmt: skip
    shift = _direction([t.data for t in everything], directions)
    return _compare(f, frozen, [shift], analytical.view(1), tolerances)


def _within(
    analytical: torch.Tensor,
    numerical: torch.Tensor,
    atol: float,
    rtol: float,
    uncertainty: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """gradcheck's rule ``|a - n| <= atol + rtol * |n|``, widened by the difference's own
    uncertainty where it was re-measured."""
    return (analytical - numerical).abs() <= atol + rtol * numerical.abs() + uncertainty


def check_gradients(
    model: nn.Module,
    x: torch.Tensor,
    *,
    samples: int = 4,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
) -> dict[str, Any]:
    """Autograd against centred differences for ``model`` (float64, in the mode it is in) at input
    ``x``: torch's fast gradcheck over everything and the sampled check per module."""
    gen = torch.Generator().manual_seed(seed)
    x = x.detach().clone().requires_grad_()
    with torch.no_grad():
        weights = torch.randn(_main(model(x)).shape, generator=gen, dtype=x.dtype)

    def f() -> torch.Tensor:
        return (_main(model(x)) * weights).sum()

    model.zero_grad(set_to_none=True)
    f().backward()
    frozen = freeze_activation_pattern(f)
    tolerances = (eps, atol, rtol)
    rows = [
        {"module": "(input)", "type": "",
         **_check_tensors(f, frozen, [x], [x.grad], samples, gen, tolerances)}
    ]  # fmt: skip
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in own]
            checked = _check_tensors(f, frozen, own, grads, samples, gen, tolerances)
            rows.append({"module": name, "type": type(module).__name__, **checked})
    torch_passed, torch_message = _torch_gradcheck(model, x.detach(), weights, tolerances)
    whole = {"passed": torch_passed, "message": torch_message}
    if not torch_passed:  # torch's step is fixed: re-measure its kind of check, one direction
        whole["remeasured"] = _compare_along_random_direction(f, frozen, x, model, gen, tolerances)
        whole["passed"] = whole["remeasured"]["passed"]
        whole["message"] += (
            f"; re-measured along one random direction: worst rel. error "
            f"{whole['remeasured']['worst_rel_error']:.1e}, "
            + ("passed" if whole["passed"] else "failed")
        )
    failing = [r["module"] for r in rows[1:] if not r["passed"]]
    return {
        "passed": whole["passed"] and all(r["passed"] for r in rows),
        "torch_gradcheck": whole,
        "suspect": failing[-1] if failing else None,
        "modules": rows,
    }


def _torch_gradcheck(
    model: nn.Module, x: torch.Tensor, weights: torch.Tensor, tolerances: tuple[float, float, float]
) -> tuple[bool, str]:
    """``torch.autograd.gradcheck`` in fast mode of the same function of the input and of all
    parameters as one flat vector (passed through ``torch.func.functional_call``): one random
    direction each, so a few evaluations whatever the model's size.

    When fast mode finds a mismatch, torch builds its error message in slow mode, a full numerical
    Jacobian: two forward passes per parameter, days for a large model (hours for odenet_mnist
    through its 1,000-step grid). The verdict is already known then, so the function stops being
    evaluated after ``FAST_MODE_CALLS`` calls; the per-module table says where the mismatch is."""
    eps, atol, rtol = tolerances
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names, shapes = [n for n, _ in trained], [p.shape for _, p in trained]
    sizes = [p.numel() for _, p in trained]
    flat = torch.cat([p.detach().flatten() for _, p in trained])

    calls = 0

    def f(inp: torch.Tensor, flat_params: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls > FAST_MODE_CALLS:
            raise _SlowModeStarted
        values = [v.view(s) for v, s in zip(flat_params.split(sizes), shapes, strict=True)]
        out = torch.func.functional_call(model, dict(zip(names, values, strict=True)), (inp,))
        return (_main(out) * weights).sum()

    try:
        gradcheck(
            f,
            (x.clone().requires_grad_(), flat.requires_grad_()),
            eps=eps,
            atol=atol,
            rtol=rtol,
            fast_mode=True,
            check_undefined_grad=False,
        )
    except GradcheckError as err:
        return False, " ".join(str(err).split())[:300]
    except _SlowModeStarted:
        return False, "fast mode: autograd and finite differences disagree along a random direction"
    return True, "passed"


def build_float64_model(
    name: str, kwargs: dict[str, Any], ode_solver: str = "rk4", ode_step: float = 0.001
) -> nn.Module:
    """``create_model(name, **kwargs)`` in float64 and train mode, dropout off, ODE blocks on a
    fixed grid (``ode_solver`` with ``ode_step``)."""
    try:
        entry = get_model_entry(name)
        kwargs = set_dropout(name, kwargs, 0.0)
        fixed_grid = {"solver": ode_solver, "step_size": ode_step}
        kwargs.update({k: v for k, v in fixed_grid.items() if k in entry.accepted_kwargs})
        model = create_model(name, **kwargs)
    except (ValueError, TypeError) as err:
        raise UserError(str(err)) from None
    return model.double().train()


def format_report(report: dict[str, Any]) -> str:
    columns = [
        ("module", "module"),
        ("type", "type"),
        ("params", "params"),
        ("checked", "checked"),
        ("remeasured", "passed re-measured"),
        ("worst", "worst rel. error"),
        ("ok", "ok"),
    ]
    rows = [
        {**r, "worst": f"{r['worst_rel_error']:.1e}", "ok": "yes" if r["passed"] else "NO"}
        for r in report["modules"]
    ]
    verdict = "PASS" if report["passed"] else "FAIL"
    torch_check = report["torch_gradcheck"]
    lines = [
        markdown_table(
            rows,
            columns,
            header=f"gradcheck {report['model']}, input {report['input_shape']} float64, "
            f"eps {report['eps']:g}, atol {report['atol']:g}, rtol {report['rtol']:g}",
        ),
        f"torch.autograd.gradcheck (fast mode, input and all parameters): {torch_check['message']}",
        f"gradcheck {verdict}"
        + (f": suspect {report['suspect']} (the last failing module)" if report["suspect"] else ""),
    ]
    return "\n".join(lines)
