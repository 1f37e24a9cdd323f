"""Minimal, stable, symbolic corrections for piecewise-linear networks (Zhang, Solar-Lezama, Singh,
"Interpreting Neural Network Judgments via Minimal, Stable, and Symbolic Corrections", NeurIPS
2018, arXiv:1802.07384, Sec. 3-4; the authors' code is ``xinpl/Polaris``, ``nnExplain/genExp.py``).

A network of Linear, Conv2d, BatchNorm (eval), ReLU, max/average pooling and Flatten layers is
piecewise linear: fixing every ReLU's on/off state and every max-pool's choice (an *activation
pattern*) makes it affine on a polytope of inputs. Over the chosen features ``z`` (the others
fixed), "the target logit is at least every other logit" is then a set of linear constraints, and
the smallest weighted-L1 change ``Σ wᵢ|zᵢ - xᵢ|`` within one pattern's polytope is a linear program
(solved with HiGHS through ``scipy.optimize.linprog``). A correction is *stable* for a radius r when
the box ``|z' - z| ≤ r`` around it lies inside one such polytope, which is again linear:
``a·z + |a|·r ≤ b`` for every constraint.

The search over patterns (the paper grows a region by flipping one unit at a time from a seed and
keeps the neighbours whose LP is feasible) is run here as a best-first search ordered by a lower
bound on each pattern's distance from x: the weighted-L1 distance to the half-space a flipped
unit's constraint leaves open, replaced by the exact distance (an LP) when the pattern is first
examined. It starts from x's own pattern and from the first pattern met by a linearised walk
towards the target (DeepFool-like: the minimal change under the current pattern's affine map,
then the pattern of that point, and again), and stops when the next lower bound is no better than
the best correction found — then no closer correction exists anywhere inside the bounds
(``certified``) — or after ``max_regions`` patterns. The result is verified on the network itself:
an input that does not reach the target is never returned.

Differences from Polaris: no Gurobi; the regions are explored in order of distance instead of
breadth-first; the symbolic answer is the polytope of linear constraints (and the list of polytopes
explored that hold target inputs) rather than a triangle fitted inside their union; stability is
checked inside one polytope, which is sufficient, not necessary.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.patches import Rectangle
from scipy.optimize import linprog
from torch import nn

from zoo.analysis.attacks import pgd
from zoo.errors import UserError
from zoo.io import atomic_write_figure, pyplot

PIECEWISE_LINEAR = (
    nn.Linear,
    nn.Conv2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Identity,  # an empty classifier slot
    nn.Dropout,  # the identity in eval mode
)
MAX_WALK = 20  # steps of the linearised walk that looks for a pattern holding target inputs
TOL = 1e-9
THICKNESS = 1e-7  # a region must hold a ball of this radius (input units) to count


@dataclass
class Correction:
    """The result of :func:`minimal_correction`.

    ``x``: the corrected input (shape of the original; ``None`` when none was found); ``distance``:
    its weighted L1 distance over the chosen features; ``stable``: the box of the given radius
    around it is classified as the target (inside one activation region); ``A``, ``b``: that
    region, ``A z ≤ b`` over the chosen features (in input units, feature bounds included);
    ``pieces``: the ``(A, b)`` of every explored region holding target inputs (their union is the
    symbolic correction), ``num_regions == len(pieces)``; ``nearest_distance``: the smallest
    distance found without the stability requirement; ``certified``: the search proved that no
    closer correction exists inside the bounds.
    """

    found: bool
    x: torch.Tensor | None
    distance: float | None
    stable: bool
    A: np.ndarray | None
    b: np.ndarray | None
    num_regions: int
    regions_explored: int
    certified: bool
    nearest_distance: float | None
    pieces: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def check_piecewise_linear(model: nn.Module) -> None:
    """Raise a one-line :class:`UserError` naming the first layer that is not piecewise linear."""
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue
        if not isinstance(module, PIECEWISE_LINEAR):
            raise UserError(
                f"minimal corrections need a piecewise-linear network; layer {name!r} is "
                f"{type(module).__name__} (use Linear, Conv2d, BatchNorm, ReLU, MaxPool2d, "
                "AvgPool2d and Flatten layers, e.g. lenet5 with activation=relu pool=max)"
            )
        if isinstance(module, nn.MaxPool2d) and (module.ceil_mode or module.return_indices):
            raise UserError(f"layer {name!r}: max pooling with ceil_mode/return_indices")


class _Linearised:
    """The network with every ReLU and max-pool fixed to a given pattern (forward hooks), run on
    a batch ``[x, x + e₁, …, x + e_k]``: being affine, it gives the value at x and the exact
    Jacobian column of every feature, for the logits and for every ReLU/max-pool input."""

    def __init__(self, model: nn.Module) -> None:
        check_piecewise_linear(model)
        self.model = copy.deepcopy(model).double().eval()
        self.units = [m for m in self.model.modules() if isinstance(m, (nn.ReLU, nn.MaxPool2d))]
        for m in self.units:
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.active = False  # the hooks act only inside pattern_at and affine
        self.pattern: list[torch.Tensor] | None = None
        self.records: list = []
        self.windows: dict[int, torch.Tensor] = {}
        for i, m in enumerate(self.units):
            m.register_forward_hook(self._relu if isinstance(m, nn.ReLU) else self._pool)
            m._unit_index = i  # type: ignore[attr-defined]

    def _window_indices(self, m: nn.MaxPool2d, h: int, w: int) -> torch.Tensor:
        """(K, L): the flat input index of each of the K window elements of each of the L
        outputs, -1 for padding."""
        key = (m._unit_index, h, w)  # type: ignore[attr-defined]
        if key not in self.windows:
            index = torch.arange(1, h * w + 1, dtype=torch.float64).view(1, 1, h, w)
            cols = nn.functional.unfold(index, m.kernel_size, m.dilation, m.padding, m.stride)
            self.windows[key] = cols[0].round().long() - 1
        return self.windows[key]

    def _relu(self, module: nn.Module, inputs, output):
        if not self.active:
            return None
        pre = inputs[0]
        i = module._unit_index
        mask = pre[0] > 0 if self.pattern is None else self.pattern[i]
        self.records.append((i, "relu", pre.flatten(1), mask))
        return pre * mask

    def _pool(self, module: nn.MaxPool2d, inputs, output):
        if not self.active:
            return None
        pre = inputs[0]
        i = module._unit_index
        n, c, h, w = pre.shape
        win = self._window_indices(module, h, w)  # (K, L)
        values = pre.flatten(2)[:, :, win.clamp_min(0)]  # (n, C, K, L)
        if self.pattern is None:
            choice = values[0].masked_fill(win < 0, -math.inf).argmax(1)  # (C, L)
        else:
            choice = self.pattern[i]
        chosen = values.gather(2, choice[None, :, None, :].expand(n, c, 1, -1))[:, :, 0]
        self.records.append((i, "pool", values, choice, win))
        return chosen.view(n, c, *output.shape[-2:])

    @torch.no_grad()
    def pattern_at(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The activation pattern of the network at the input ``x`` (one sample)."""
        self.pattern, self.records, self.active = None, [], True
        self.model(x[None].double())
        self.active = False
        found = [None] * len(self.units)
        for record in self.records:
            found[record[0]] = record[3]
        return found

    @torch.no_grad()
    def affine(self, x: torch.Tensor, features: torch.Tensor, pattern: list[torch.Tensor]):
        """Logits ``l0 + J δ`` and the pattern's constraints ``rows δ ≤ rhs`` (one row per
        ReLU state and per max-pool comparison), δ the change of the chosen features; ``flips``
        tells for each row the unit and the state that crossing it leads to."""
        k = len(features)
        batch = x.double().flatten().repeat(k + 1, 1)
        batch[torch.arange(1, k + 1), features] += 1.0
        self.pattern, self.records, self.active = pattern, [], True
        logits = self.model(batch.view(k + 1, *x.shape))
        self.pattern, self.active = None, False
        rows, rhs, flips = [], [], []
        for record in self.records:
            i, kind = record[0], record[1]
            if kind == "relu":
                pre, mask = record[2], record[3].flatten()
                value, grad = pre[0], (pre[1:] - pre[0]).T  # (U,), (U, k)
                sign = mask.double() * 2 - 1  # on: pre ≥ 0 is -grad·δ ≤ value
                rows.append(-sign[:, None] * grad)
                rhs.append(sign * value)
                units = torch.arange(len(value))
                flips.append(
                    torch.stack([torch.full_like(units, i), units, -torch.ones_like(units)], 1)
                )
            else:
                values, choice, win = record[2], record[3], record[4]
                c, big_k, big_l = values.shape[1:]
                v0 = values[0]  # (C, K, L)
                g = (values[1:] - values[0]).permute(1, 2, 3, 0)  # (C, K, L, k)
                pick = choice[:, None, :, None].expand(c, 1, big_l, k)
                g_chosen = g.gather(1, pick)  # (C, 1, L, k)
                v_chosen = v0.gather(1, choice[:, None, :])  # (C, 1, L)
                valid = (win >= 0)[None].expand(c, -1, -1) & (
                    torch.arange(big_k)[None, :, None] != choice[:, None, :]
                )
                rows.append((g - g_chosen)[valid])  # value_k - value_chosen ≤ 0
                rhs.append((v_chosen - v0)[valid])
                ci, ki, li = valid.nonzero(as_tuple=True)
                flips.append(torch.stack([torch.full_like(ci, i), ci * big_l + li, ki], 1))
        jacobian = (logits[1:] - logits[0]).T.numpy()
        if not rows:
            return logits[0].numpy(), jacobian, np.zeros((0, k)), np.zeros(0), np.zeros((0, 3))
        return (
            logits[0].numpy(),
            jacobian,
            torch.cat(rows).numpy(),
            torch.cat(rhs).numpy(),
            torch.cat(flips).numpy(),
        )


def _flipped(pattern: list[torch.Tensor], flip: np.ndarray) -> list[torch.Tensor]:
    """The pattern after crossing one constraint: a ReLU switched, or a max-pool's new choice."""
    i, unit, state = (int(v) for v in flip)
    new = list(pattern)
    t = new[i].clone()
    if state < 0:  # ReLU unit: toggle
        flat = t.view(-1)
        flat[unit] = ~flat[unit]
    else:  # max-pool output (channel, position) = unit: choose window element `state`
        t.view(-1)[unit] = state
    new[i] = t
    return new


def _canonical(pattern: list[torch.Tensor], ties: np.ndarray) -> list[torch.Tensor]:
    """One pattern per region: a ReLU whose input is 0 wherever the features go counts as off,
    and a max-pool whose window holds identical values chooses the first of them."""
    if len(ties) == 0:
        return pattern
    new = [t.clone() for t in pattern]
    for i, unit, state in ties.astype(int):
        flat = new[i].view(-1)
        if state < 0:
            flat[unit] = False
        else:
            flat[unit] = min(int(flat[unit]), state)
    return new


def _key(pattern: list[torch.Tensor]) -> bytes:
    return b"".join(t.numpy().tobytes() for t in pattern)


def _solve(rows, rhs, weights, lo, hi):
    """min Σ wᵢ|δᵢ| subject to rows·δ ≤ rhs and lo ≤ δ ≤ hi; the optimal δ or None."""
    k = len(weights)
    eye = np.eye(k)
    a_ub = np.vstack(
        [
            np.hstack([rows, np.zeros((len(rows), k))]),
            np.hstack([eye, -eye]),
            np.hstack([-eye, -eye]),
        ]
    )
    b_ub = np.concatenate([rhs, np.zeros(2 * k)])
    bounds = [(lo[j], hi[j]) for j in range(k)] + [(0, None)] * k
    result = linprog(
        np.concatenate([np.zeros(k), weights]), a_ub, b_ub, bounds=bounds, method="highs"
    )
    return result.x[:k] if result.status == 0 else None


def _extent(rows, rhs, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """The bounding box of {δ : rows·δ ≤ rhs, lo ≤ δ ≤ hi} (2k LPs)."""
    k = len(lo)
    ends = np.empty((2, k))
    for i in range(k):
        for side, sign in enumerate((1.0, -1.0)):
            c = np.zeros(k)
            c[i] = sign
            result = linprog(c, rows, rhs, bounds=list(zip(lo, hi, strict=True)), method="highs")
            ends[side, i] = result.x[i] if result.status == 0 else (lo[i], hi[i])[side]
    return ends[0], ends[1]


@dataclass
class _Region:
    """One activation pattern's polytope, ``rows δ ≤ rhs``, and its affine logits ``l0 + J δ``."""

    pattern: list[torch.Tensor]
    logits: np.ndarray
    jacobian: np.ndarray  # (classes, k)
    rows: np.ndarray
    rhs: np.ndarray
    flips: np.ndarray  # per row: (unit module, unit, new state) on its other side
    dlo: np.ndarray  # the bounds of δ
    dhi: np.ndarray
    extent: tuple[np.ndarray, np.ndarray] | None = None

    def reaches(self, row: int) -> bool:
        """Whether the region's bounding box (2k LPs, computed once, when first asked) reaches
        the face of ``row``: a cheap test that spares an LP for most non-neighbours."""
        if self.extent is None:
            self.extent = _extent(self.rows, self.rhs, self.dlo, self.dhi)
        low, high = self.extent
        a, b = self.rows[row], self.rhs[row]
        return float(np.where(a > 0, a * high, a * low).sum()) >= b - 1e-9 * (1 + abs(b))


class _Problem:
    """The data of one correction: the input, the free features δ = z - x₀ with their bounds,
    weights and radii, and the questions asked of the network."""

    def __init__(self, lin, x, target, features, radius, bounds, weights) -> None:
        self.lin, self.x, self.target = lin, x, int(target)
        self.feats = torch.as_tensor(list(features), dtype=torch.long)
        k = self.k = len(self.feats)
        with torch.no_grad():
            self.num_classes = int(lin.model(x[None]).shape[1])
        if k == 0 or len(set(self.feats.tolist())) != k:
            raise UserError(f"features must be distinct indices into the {x.numel()} input values")
        if self.feats.min() < 0 or self.feats.max() >= x.numel():
            raise UserError(f"features must be distinct indices into the {x.numel()} input values")
        if not 0 <= self.target < self.num_classes:
            raise UserError(f"target={target}: the model has classes 0..{self.num_classes - 1}")
        self.x0 = x.flatten()[self.feats].numpy()
        lo, hi = (-np.inf, np.inf) if bounds is None else bounds
        self.lo = np.broadcast_to(np.asarray(lo, float), (k,)).copy()
        self.hi = np.broadcast_to(np.asarray(hi, float), (k,)).copy()
        slack = 1e-5 * np.where(np.isfinite(self.hi - self.lo), self.hi - self.lo, 1.0)
        if (
            np.any(self.lo >= self.hi)
            or np.any(self.x0 < self.lo - slack)
            or np.any(self.x0 > self.hi + slack)
        ):
            raise UserError("bounds must be (lo, hi) with lo < hi and the input's features inside")
        self.dlo = np.minimum(self.lo - self.x0, 0.0)  # bounds of δ (x₀ rounded in)
        self.dhi = np.maximum(self.hi - self.x0, 0.0)
        if weights is None:
            span = self.hi - self.lo
            weights = np.where(np.isfinite(span), 1.0 / np.where(np.isfinite(span), span, 1.0), 1.0)
        self.weights = np.broadcast_to(np.asarray(weights, float), (k,)).copy()
        self.radius = np.broadcast_to(np.asarray(radius, float), (k,)).copy()
        if np.any(self.weights <= 0) or np.any(self.radius < 0):
            raise UserError("weights must be > 0 and radius >= 0")

    def distance(self, delta: np.ndarray) -> float:
        return float(self.weights @ np.abs(delta))

    def solve(self, rows: np.ndarray, rhs: np.ndarray) -> np.ndarray | None:
        return _solve(rows, rhs, self.weights, self.dlo, self.dhi)

    def pattern_near(self, delta: np.ndarray) -> list[torch.Tensor]:
        """The pattern at a point within 1e-6 (relative to the bounds) of x₀ + δ and strictly
        inside the bounds: at a tie between units (x on several regions' boundaries, e.g. equal
        values in a max-pool window, or pixels at 0) it is the pattern of a full-dimensional
        region touching that point."""
        span = np.where(np.isfinite(self.dhi - self.dlo), self.dhi - self.dlo, 1.0)
        rng = np.random.default_rng(0)
        step = 1e-6 * span * rng.uniform(0.1, 1.0, (3, self.k))
        point = np.clip(delta + step[0] * rng.choice([-1.0, 1.0], self.k), self.dlo, self.dhi)
        point = np.clip(point, self.dlo + step[1], self.dhi - step[2])
        return self.lin.pattern_at(self.input_at(point))

    def input_at(self, delta: np.ndarray) -> torch.Tensor:
        z = self.x.flatten().index_add(0, self.feats, torch.from_numpy(np.asarray(delta)))
        return z.view_as(self.x)

    def region(self, pattern: list[torch.Tensor]) -> _Region | None:
        """The pattern's region, without the rows that cannot bind inside the bounds (widened
        by the radius); None when a row that does not depend on the features is violated."""
        l0, jac, rows, rhs, flips = self.lin.affine(self.x, self.feats, pattern)
        with np.errstate(invalid="ignore"):
            reach = np.where(rows > 0, rows * (self.dhi + self.radius), 0.0)
            reach += np.where(rows < 0, rows * (self.dlo - self.radius), 0.0)
        flat = np.abs(rows).max(1, initial=0.0) <= TOL * (1 + np.abs(rhs))
        if np.any(flat & (rhs < -1e-9)):
            return None
        keep = ~flat & (reach.sum(1) > rhs)
        return _Region(
            _canonical(pattern, flips[flat & (rhs <= 1e-9)]),
            l0,
            jac,
            rows[keep],
            rhs[keep],
            flips[keep],
            self.dlo,
            self.dhi,
        )

    def interior(self, region: _Region) -> np.ndarray:
        """The right-hand sides moved in by THICKNESS: a region without interior (where ties
        between units make several patterns describe one face) becomes empty."""
        return region.rhs - THICKNESS * np.linalg.norm(region.rows, axis=1)

    def class_rows(self, region: _Region) -> tuple[np.ndarray, np.ndarray]:
        """target logit ≥ every other logit + a small margin, as rows δ ≤ rhs."""
        others = [c for c in range(self.num_classes) if c != self.target]
        jac, l0 = region.jacobian, region.logits
        margin = 1e-6 * (1 + np.abs(l0).max())
        return jac[others] - jac[self.target], l0[self.target] - l0[others] - margin

    @torch.no_grad()
    def reaches_target(self, delta: np.ndarray) -> bool:
        return int(self.lin.model(self.input_at(delta)[None]).argmax(1)) == self.target

    @torch.no_grad()
    def box_holds(self, delta: np.ndarray) -> bool:
        """The corners of the stability box (all of them up to 6 features, else 64 drawn at
        random) are classified as the target."""
        k, r = self.k, self.radius
        if not np.any(r > 0):
            return True
        if k <= 6:
            signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * k, indexing="ij")).reshape(k, -1).T
        else:
            signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(64, k))
        corners = self.x.flatten().repeat(len(signs), 1)
        corners[:, self.feats] += torch.from_numpy(delta + signs * r)
        out = self.lin.model(corners.view(len(signs), *self.x.shape))
        return bool((out.argmax(1) == self.target).all())

    def absolute(self, rows: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows (z - x₀) ≤ rhs and the finite bounds, as A z ≤ b over the features."""
        eye = np.eye(self.k)
        a = np.vstack([rows, eye, -eye])
        b = np.concatenate([rhs + rows @ self.x0, self.hi, -self.lo])
        return a[np.isfinite(b)], b[np.isfinite(b)]


def minimal_correction(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    features: Sequence[int],
    radius: float | Sequence[float],
    bounds: tuple | None = None,
    weights: Sequence[float] | None = None,
    max_regions: int = 100,
) -> Correction:
    """The smallest weighted-L1 change of ``x`` (one input, without batch dimension) over
    ``features`` (indices into ``x.flatten()``; the others stay fixed) that makes ``model``
    predict ``target``, stable for ``radius`` (per feature or one number) when possible.

    ``bounds``: the valid range of the features, ``(lo, hi)`` with numbers or per-feature
    sequences (default unbounded); ``weights``: per-feature L1 weights (default 1 / (hi - lo),
    or 1 without bounds); ``max_regions``: how many activation regions (non-empty inside the
    bounds) to examine at most.
    """
    if max_regions < 1:
        raise UserError(f"max_regions={max_regions}: need at least 1")
    lin = _Linearised(model)
    pb = _Problem(lin, x.detach().double().cpu(), target, features, radius, bounds, weights)

    # Two queues of (key, entry id). `heap` orders patterns by a lower bound on their distance
    # from x: the best-first search that can prove a correction minimal. `local` holds the
    # neighbours across the constraints that bind at a correction found (each holds a
    # correction at least as close) and is served first: the region grows around it.
    heap: list = []
    local: list = []
    entries: dict[int, tuple] = {}  # entry id -> (pattern, None) or (parent pattern, flip)
    ids = itertools.count()

    def push(queue: list, key: float, pattern, parent: _Region | None = None, row: int = -1):
        """Queue ``pattern``, or the neighbour of ``parent`` across its constraint ``row``."""
        entry = next(ids)
        entries[entry] = (pattern, parent, row)
        heapq.heappush(queue, (key, entry))

    root = pb.pattern_near(np.zeros(pb.k))
    push(heap, 0.0, root)
    root_region = pb.region(root)
    root_key = None if root_region is None else _key(root_region.pattern)
    for seed in (_walk(pb), _attack_seed(pb)):
        if seed is not None:
            push(local, 0.0, seed)

    seen: set[bytes] = set()
    processed: set[bytes] = set()
    waiting: dict[bytes, tuple[_Region, float]] = {}  # examined, their distance above their key
    pieces: list[tuple[np.ndarray, np.ndarray]] = []
    nearest: float | None = None  # the closest target input found, stable or not
    best: tuple | None = None  # (distance, stable, δ, rows, rhs)

    def goal() -> float:
        return best[0] if best is not None and best[1] else math.inf

    def process(region: _Region) -> None:
        """The region's closest (stable) correction, and its neighbours queued."""
        nonlocal nearest, best
        n_pattern = len(region.rows)
        c_rows, c_rhs = pb.class_rows(region)
        rows, rhs = np.vstack([region.rows, c_rows]), np.concatenate([region.rhs, c_rhs])
        found = pb.solve(rows, rhs)
        if found is not None:
            pieces.append((rows, rhs))
            if pb.reaches_target(found) and (nearest is None or pb.distance(found) < nearest):
                nearest = pb.distance(found)
            stable, shrunk = found, rhs
            if np.any(pb.radius > 0):  # the box |δ' - δ| ≤ r inside the region: a δ + |a| r ≤ b
                shrunk = rhs - np.abs(rows) @ pb.radius
                stable = pb.solve(rows, shrunk)
            for candidate, is_stable in ((stable, True), (found, False)):
                if candidate is None:
                    continue
                d = pb.distance(candidate)
                if best is not None and (is_stable, -d) <= (best[1], -best[0]):
                    continue
                if pb.reaches_target(candidate) and (not is_stable or pb.box_holds(candidate)):
                    best = (d, is_stable, candidate, rows, rhs)
                    break
            for point, limit in ((found, rhs), (stable, shrunk)):
                if point is not None:
                    slack = limit[:n_pattern] - region.rows @ point
                    for j in np.flatnonzero(slack <= 1e-7 * (1 + np.abs(limit[:n_pattern]))):
                        push(local, pb.distance(point), None, region, j)
        # Crossing row j leads to the pattern with that unit flipped, which lies in
        # rows_j δ ≥ rhs_j: at least rhs_j / max|rows_j / w| away from x in weighted L1.
        scale = np.abs(region.rows / pb.weights).max(1)
        to_halfspace = np.maximum(region.rhs, 0.0) / scale
        for j in np.flatnonzero(to_halfspace < goal()):
            push(heap, float(to_halfspace[j]), None, region, j)

    explored, exhausted = 0, False
    while (heap or local) and not exhausted:
        is_local = bool(local)
        bound, entry = heapq.heappop(local if is_local else heap)
        if not is_local and bound >= goal() - 1e-12:
            heap.clear()  # no unexplored region can hold a closer stable correction
            break
        pattern, parent, row = entries.pop(entry)
        if parent is not None:
            if not is_local and not parent.reaches(row):
                continue  # the parent's region cannot reach that face: no neighbour there
            pattern = _flipped(parent.pattern, parent.flips[row])
        key = _key(pattern)
        if key in seen:
            continue
        if key in waiting:
            region, distance = waiting.pop(key)
        else:
            region = pb.region(pattern)
            if region is not None and _key(region.pattern) != key:  # a tie: one key per region
                seen.add(key)
                pattern, key = region.pattern, _key(region.pattern)
                if key in seen or key in waiting:
                    continue
            to_region = None if region is None else pb.solve(region.rows, pb.interior(region))
            if to_region is None:  # no input inside the bounds has this pattern
                seen.add(key)
                continue
            explored += 1
            exhausted = explored >= max_regions
            distance = pb.distance(to_region)
        if not is_local and distance > bound + 1e-12 and not exhausted:
            waiting[key] = (region, distance)  # its exact distance is a better key
            entries[entry] = (pattern, None, -1)
            heapq.heappush(heap, (distance, entry))
            continue
        seen.add(key)
        processed.add(key)
        process(region)
    # Every region that could hold a closer correction was examined, starting from x's own.
    certified = not heap and not local and root_key in processed
    for region, distance in waiting.values():  # examined already: look inside before stopping
        if distance < goal():
            process(region)

    pieces_abs = [pb.absolute(rows, rhs) for rows, rhs in pieces]
    if best is None:
        return Correction(
            False,
            None,
            None,
            False,
            None,
            None,
            len(pieces),
            explored,
            certified,
            nearest,
            pieces_abs,
        )
    distance, stable, delta, rows, rhs = best
    a, b = pb.absolute(rows, rhs)
    return Correction(
        True,
        pb.input_at(delta).to(x.dtype),
        distance,
        stable,
        a,
        b,
        len(pieces),
        explored,
        certified,
        nearest,
        pieces_abs,
    )


class FeatureSpace(nn.Module):
    """``model`` as a function of the features ``features`` of ``x`` scaled from [lo, hi] to
    [0, 1], the other features fixed: what PGD restricted to those features attacks."""

    def __init__(self, model: nn.Module, x: torch.Tensor, features, lo, hi) -> None:
        super().__init__()
        self.model, self.x = model, x
        self.feats = torch.as_tensor(features, dtype=torch.long)
        self.lo = torch.as_tensor(np.asarray(lo, float), dtype=x.dtype).expand(len(self.feats))
        self.span = torch.as_tensor(np.asarray(hi, float), dtype=x.dtype) - self.lo
        self.train(model.training)  # so that an attack's eval_mode restores the model's mode

    def to_unit(self, z: torch.Tensor) -> torch.Tensor:
        """The features of the input ``z`` in [0, 1]."""
        return ((z.flatten()[self.feats] - self.lo) / self.span).clamp(0, 1)

    def to_input(self, u: torch.Tensor) -> torch.Tensor:
        """Inputs (batch of ``u``'s rows) with the features set from ``u``."""
        z = self.x.flatten().repeat(len(u), 1)
        z = z.index_copy(1, self.feats, self.lo + u * self.span)
        return z.view(len(u), *self.x.shape)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(self.to_input(u))


def smallest_pgd(
    model: nn.Module, x: torch.Tensor, target: int, features, lo, hi, bisections: int = 8
) -> torch.Tensor | None:
    """The input of class ``target`` found by targeted PGD (:func:`zoo.analysis.attacks.pgd`, 50
    steps, L∞ in units of the feature ranges, only ``features`` changed) at the smallest ε a
    bisection on [0, 1] finds; None when ε = 1 fails."""
    space = FeatureSpace(model, x, features, lo, hi)
    u0, wanted = space.to_unit(x)[None], torch.tensor([int(target)])

    def attack(eps: float) -> torch.Tensor | None:
        gen = torch.Generator().manual_seed(0)
        u = pgd(space, u0, wanted, eps, steps=50, generator=gen, targeted=True)
        with torch.no_grad():
            return u if int(space(u).argmax(1)) == int(target) else None

    best, low, high = attack(1.0), 0.0, 1.0
    if best is None:
        return None
    for _ in range(bisections):
        found = attack((low + high) / 2)
        if found is None:
            low = (low + high) / 2
        else:
            best, high = found, (low + high) / 2
    return space.to_input(best)[0]


def _attack_seed(pb: _Problem) -> list[torch.Tensor] | None:
    """The pattern of the closest PGD point (:func:`smallest_pgd`); None without finite
    bounds or when PGD fails. Its region is then examined first, so the correction is never
    farther than that PGD point."""
    if not np.all(np.isfinite(pb.hi - pb.lo)):
        return None
    found = smallest_pgd(pb.lin.model, pb.x, pb.target, pb.feats, pb.lo, pb.hi)
    if found is None:
        return None
    return pb.pattern_near(found.flatten()[pb.feats].numpy() - pb.x0)


def _walk(pb: _Problem) -> list[torch.Tensor] | None:
    """A linearised walk towards the target (DeepFool-like, with an L1 LP step): the smallest
    change that reaches the target under the current pattern's affine map, then the pattern of
    that point, until a pattern's own region holds target inputs. Returns that pattern or None."""
    delta = np.zeros(pb.k)
    for _ in range(MAX_WALK):
        region = pb.region(pb.pattern_near(delta))
        if region is None:
            return None
        c_rows, c_rhs = pb.class_rows(region)
        if (
            pb.solve(np.vstack([region.rows, c_rows]), np.concatenate([region.rhs, c_rhs]))
            is not None
        ):
            return region.pattern
        step = pb.solve(c_rows, c_rhs)
        if step is None or np.allclose(step, delta):
            return None
        delta = step
    return None


def salient_patch(
    model: nn.Module, x: torch.Tensor, target: int, height: int = 4, width: int = 5
) -> tuple[int, int, int, int]:
    """``(row, col, height, width)`` of the window of an image ``x`` (C, H, W) where the
    gradient of the target's logit margin over the predicted class is largest in sum."""
    x = x.detach()[None].requires_grad_(True)
    with torch.enable_grad():
        logits = model.eval()(x)[0]
        predicted = int(logits.argmax())
        (logits[target] - logits[predicted]).backward()
    saliency = nn.functional.avg_pool2d(x.grad.abs().sum(1, keepdim=True), (height, width), 1)
    row, col = divmod(int(saliency.flatten().argmax()), saliency.shape[-1])
    return row, col, height, width


def correct_patch(
    model: nn.Module,
    x: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    target: int,
    patch: tuple[int, int, int, int],
    radius: float,
    max_regions: int = 100,
) -> tuple[Correction, dict[str, Any], torch.Tensor | None]:
    """The minimal correction of an image to class ``target`` that changes only the pixels of
    ``patch`` (row, col, height, width), stable within ``radius`` pixel units, for a model that
    reads ``x = (pixels - mean) / std`` (C, H, W; ``mean`` and ``std`` of shape (C, 1, 1), pixels
    in [0, 1]).

    Returns the :class:`Correction` (model-input units), its description in pixel units (found,
    distances, stability, regions, seconds; when found, the region ``A p ≤ b`` over the patch's
    pixels, the corrected pixels and the model's class for them) and the corrected image in
    pixels (None when none was found).
    """
    c, h, w = x.shape
    row, col, ph, pw = patch
    grid = torch.arange(c * h * w).view(c, h, w)
    features = grid[:, row : row + ph, col : col + pw].flatten()
    m_f, s_f = mean.expand(c, h, w).flatten()[features], std.expand(c, h, w).flatten()[features]
    start = time.perf_counter()
    result = minimal_correction(
        model,
        x,
        target,
        features.tolist(),
        radius=(radius / s_f).numpy(),  # pixel units to model-input units
        bounds=((-m_f / s_f).numpy(), ((1 - m_f) / s_f).numpy()),
        max_regions=max_regions,
    )
    seconds = time.perf_counter() - start
    described: dict[str, Any] = {
        "found": result.found,
        "distance_pixels_l1": result.distance,
        "nearest_distance_pixels_l1": result.nearest_distance,
        "stable": result.stable,
        "certified": result.certified,
        "num_regions": result.num_regions,
        "regions_explored": result.regions_explored,
        "seconds": round(seconds, 3),
    }
    if not result.found:
        return result, described, None
    corrected = (result.x * std + mean).clamp(0, 1)
    # The region over the patch's pixels p = m + s z: (A / s) p ≤ b + A (m / s).
    a_pix = result.A / s_f.numpy()
    b_pix = result.b + result.A @ (m_f / s_f).numpy()
    described["region"] = {
        "variables": [
            f"pixel[{int(f) // (h * w)},{int(f) % (h * w) // w},{int(f) % w}]" for f in features
        ],
        "A": a_pix.tolist(),
        "b": b_pix.tolist(),
    }
    described["corrected_pixels"] = corrected.flatten()[features].tolist()
    with torch.no_grad():
        described["corrected_prediction"] = int(model(result.x[None].to(x.dtype)).argmax())
    return result, described, corrected


def correct_many(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    targets: Sequence[int],
    features_of: Callable[[int], Sequence[int]],
    lo_of: Callable[[int], np.ndarray],
    hi_of: Callable[[int], np.ndarray],
    radius_of: Callable[[int], float | np.ndarray],
    max_regions: int,
) -> list[dict[str, Any]]:
    """One row per input (printed as it is done): the minimal correction of input ``i`` to
    ``targets[i]`` over the features ``features_of(i)`` within ``[lo_of(i), hi_of(i)]``, against
    the smallest targeted PGD point on the same features (:func:`smallest_pgd`), with their
    weighted L1 distances (feature-range units) and whether PGD's point lies in one of the
    activation regions the correction explored (there the LP's minimum is never larger)."""
    rows = []
    for i, (x, target) in enumerate(zip(inputs, targets, strict=True)):
        features, lo, hi = features_of(i), lo_of(i), hi_of(i)
        start = time.perf_counter()
        result = minimal_correction(
            model, x, target, features, radius_of(i), (lo, hi), max_regions=max_regions
        )
        seconds = time.perf_counter() - start
        weights = 1.0 / (np.asarray(hi, float) - np.asarray(lo, float))
        adversarial = smallest_pgd(model, x, target, features, lo, hi)
        pgd_distance = None
        in_explored = False
        if adversarial is not None:
            delta = (adversarial - x).flatten()[features].numpy()
            pgd_distance = float(np.sum(weights * np.abs(delta)))
            z = adversarial.flatten()[features].double().numpy()
            in_explored = any(np.all(a @ z <= b + 1e-6) for a, b in result.pieces)
        rows.append(
            {
                "input": i,
                "target": int(target),
                "found": result.found,
                "stable": result.stable,
                "certified": result.certified,
                "distance": result.distance,
                "nearest_distance": result.nearest_distance,
                "regions_explored": result.regions_explored,
                "num_regions": result.num_regions,
                "seconds": seconds,
                "pgd_distance": pgd_distance,
                "pgd_in_explored_regions": in_explored,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, times and median distances over :func:`correct_many`'s rows."""
    found = [r for r in rows if r["found"]]
    both = [r for r in found if r["pgd_distance"] is not None]
    inside = [r for r in both if r["pgd_in_explored_regions"]]
    return {
        "inputs": len(rows),
        "found": len(found),
        "stable": sum(r["stable"] for r in found),
        "certified_minimal": sum(r["certified"] for r in found),
        "pgd_found": sum(r["pgd_distance"] is not None for r in rows),
        "seconds_median": statistics.median(r["seconds"] for r in rows),
        "seconds_mean": statistics.fmean(r["seconds"] for r in rows),
        "seconds_max": max(r["seconds"] for r in rows),
        "distance_median": statistics.median(r["distance"] for r in found) if found else None,
        "nearest_median": statistics.median(r["nearest_distance"] for r in found)
        if found
        else None,
        "pgd_distance_median": statistics.median(r["pgd_distance"] for r in both) if both else None,
        "lp_nearest_below_pgd": sum(
            r["nearest_distance"] <= r["pgd_distance"] + 1e-9 for r in both
        ),
        "both_found": len(both),
        "pgd_in_explored_regions": len(inside),
        "lp_above_pgd_inside_explored": sum(
            r["nearest_distance"] > r["pgd_distance"] + 1e-9 for r in inside
        ),
    }


def plot_correction(
    original: torch.Tensor,
    corrected: torch.Tensor,
    patch: tuple[int, int, int, int],
    summary: dict,
    path: Path,
) -> Path:
    """The original image, the corrected one (pixels in [0, 1]) and their difference, the patch
    framed; titled with ``summary``'s ``predicted``, ``target`` and ``distance_pixels_l1``."""
    plt = pyplot()
    row, col, ph, pw = patch
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    change = (corrected - original)[0]
    limit = float(change.abs().max()) or 1.0
    panels = (
        (original[0], "gray", (0, 1), f"original: class {summary['predicted']}"),
        (corrected[0], "gray", (0, 1), f"corrected: class {summary['target']}"),
        (change, "RdBu_r", (-limit, limit), f"change (L1 {summary['distance_pixels_l1']:.3f})"),
    )
    for ax, (image, cmap, (vmin, vmax), title) in zip(axes, panels, strict=True):
        shown = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), pw, ph, fill=False, ec="tab:orange", lw=1.5))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    return atomic_write_figure(path, fig)
