"""MLPs on flat vectors (the Gaussian-mixture testbed): score, classifiers and guidance net."""

from __future__ import annotations

import math

import torch
from torch import nn


class TimeEmbedding(nn.Module):
    """Fixed Fourier features of log-scaled time, so small t (where scores are sharp) is resolved."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(200.0), dim // 2)), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = t[:, None] * self.freqs[None, :]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


def _mlp(d_in: int, width: int, depth: int, d_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(d_in if i == 0 else width, width), nn.SiLU()]
    layers.append(nn.Linear(width if depth > 0 else d_in, d_out))
    return nn.Sequential(*layers)


class _VectorNet(nn.Module):
    """Concatenates [x, time features, labels] and runs an MLP."""

    def __init__(self, shape: tuple[int, ...], width: int, depth: int, num_labels: int, d_out: int, timed: bool):
        super().__init__()
        self.shape = shape
        self.dim = math.prod(shape)
        self.num_labels = num_labels
        self.time = TimeEmbedding() if timed else None
        d_in = self.dim + (16 if timed else 0) + num_labels
        self.net = _mlp(d_in, width, depth, d_out)

    def features(self, x: torch.Tensor, t: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor:
        parts = [x.reshape(x.shape[0], -1)]
        if self.time is not None:
            parts.append(self.time(t))
        if self.num_labels:
            if y is None:
                raise ValueError("this network is label-conditional: pass y of shape (N, num_labels)")
            parts.append(y.to(x.dtype))
        return torch.cat(parts, dim=1)


class ScoreMLP(_VectorNet):
    """eps-prediction network eps_theta(x_t, t[, y]) (source, vanilla, finetune)."""

    def __init__(self, shape, width=256, depth=4, num_labels=0):
        super().__init__(shape, width, depth, num_labels, math.prod(shape), timed=True)

    def forward(self, x, t, y=None):
        return self.net(self.features(x, t, y)).reshape(x.shape)


class ClassifierMLP(_VectorNet):
    """Domain classifier: logit of P(source | x[, y])."""

    def __init__(self, shape, width=64, depth=2, num_labels=0):
        super().__init__(shape, width, depth, num_labels, 1, timed=False)

    def forward(self, x, y=None):
        return self.net(self.features(x, None, y)).squeeze(1)


class TimeClassifierMLP(_VectorNet):
    """Time-dependent domain classifier: logit of P(source | x_t[, y], t)."""

    def __init__(self, shape, width=128, depth=3, num_labels=0):
        super().__init__(shape, width, depth, num_labels, 1, timed=True)

    def forward(self, x, t, y=None):
        return self.net(self.features(x, t, y)).squeeze(1)


class GuidanceMLP(_VectorNet):
    """Guidance net: returns f = log h_psi(x_t, t[, y]); h = exp(f) is positive by construction."""

    def __init__(self, shape, width=512, depth=4, num_labels=0):
        super().__init__(shape, width, depth, num_labels, 1, timed=True)

    def forward(self, x, t, y=None):
        return self.net(self.features(x, t, y)).squeeze(1)
