"""Dynamics f(z, t) for continuous normalizing flows.

- :class:`HyperNetDynamics`: torchdiffeq's ``examples/cnf.py`` (after Chen et al. 2018, §4 and
  Fig. 4): a hypernetwork of t gives ``width`` gated tanh units,
  f(z, t) = (1/width) Σ_k (u_k ⊙ σ(g_k)) tanh(w_kᵀz + b_k), where w_k, u_k, g_k, b_k depend on t.
- :class:`ConcatSquashNet`: FFJORD's ``concatsquash`` layers (Grathwohl et al. 2019,
  ``lib/layers/diffeq_layers/basic.py``): each layer is layer(x) ⊙ σ(a·t + c) + d·t, linear for
  vectors (the toy densities) and 3×3 convolutions for images.

``zero_init=True`` zeroes what multiplies the output (the last layer; the hypernetwork's u): the
flow starts as the identity (f ≡ 0) and the model density is the base density.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU}


def _time(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(1, 1)


class HyperNetDynamics(nn.Module):
    """Gated tanh units whose parameters a small tanh network computes from t (torchdiffeq)."""

    def __init__(self, dim: int, width: int = 64, hidden: int = 32, zero_init: bool = False):
        super().__init__()
        self.dim, self.width = dim, width
        self.hyper = nn.Sequential(
            nn.Linear(1, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 3 * width * dim + width),
        )
        if zero_init:  # u ≡ 0 gives f ≡ 0; w, g, b stay random so that u still gets gradients
            out = self.hyper[-1]
            u_rows = slice(width * dim, 2 * width * dim)
            with torch.no_grad():
                out.weight[u_rows].zero_()
                out.bias[u_rows].zero_()

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        params = self.hyper(_time(t, z)).reshape(-1)
        block = self.width * self.dim
        w = params[:block].reshape(self.width, self.dim)
        u = params[block : 2 * block].reshape(self.width, self.dim)
        gate = params[2 * block : 3 * block].reshape(self.width, self.dim)
        b = params[3 * block :]
        h = torch.tanh(z @ w.T + b)  # (batch, width)
        return h @ (u * torch.sigmoid(gate)) / self.width


class ConcatSquash(nn.Module):
    """``layer(x) ⊙ σ(gate(t)) + bias(t)``: FFJORD's ConcatSquashLinear / ConcatSquashConv2d."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, dim_out: int) -> None:
        super().__init__()
        self.layer = layer
        self.gate = nn.Linear(1, dim_out)
        self.bias = nn.Linear(1, dim_out, bias=False)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tt = _time(t, x)
        shape = (1, -1) + (1,) * (x.dim() - 2)  # broadcast over the batch and any pixels
        gate = torch.sigmoid(self.gate(tt)).reshape(shape)
        return self.layer(x) * gate + self.bias(tt).reshape(shape)

    def zero_(self) -> None:
        nn.init.zeros_(self.layer.weight)
        nn.init.zeros_(self.layer.bias)
        nn.init.zeros_(self.bias.weight)


class ConcatSquashNet(nn.Module):
    """FFJORD's ODE network: concatsquash layers ``channels -> hidden... -> channels`` with an
    activation between them; linear for ``shape = (d,)``, 3×3 convolutions for ``(c, h, w)``."""

    def __init__(
        self,
        shape: tuple[int, ...],
        hidden: tuple[int, ...] = (64, 64, 64),
        activation: str = "softplus",
        zero_init: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if len(shape) not in (1, 3):
            raise ValueError(f"shape must be (dim,) or (channels, height, width), got {shape}")
        conv = len(shape) == 3
        dims = [shape[0], *hidden, shape[0]]
        self.layers = nn.ModuleList(
            ConcatSquash(
                nn.Conv2d(dims[i], dims[i + 1], 3, padding=1)
                if conv
                else nn.Linear(dims[i], dims[i + 1]),
                dims[i + 1],
            )
            for i in range(len(dims) - 1)
        )
        self.activation = ACTIVATIONS[activation]()
        if zero_init:
            self.layers[-1].zero_()

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            z = layer(t, z)
            if i < len(self.layers) - 1:
                z = self.activation(z)
        return z
