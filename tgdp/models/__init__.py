"""Networks, by role. Every net of a role has the same constructor and call signature, so stages
build them from a registry key (``cfg.arch``) and work on any data shape.

Shapes: x is (N, *shape); t is (N,) continuous time in (0, 1]; y is None or (N, num_labels) float
(one-hot or multi-hot labels for the conditional version).

    score net       Net(shape, width, depth, num_labels)(x, t, y) -> eps, (N, *shape)
    classifier      Net(shape, width, depth, num_labels)(x, y)    -> logit of "source", (N,)
    time classifier Net(shape, width, depth, num_labels)(x, t, y) -> logit of "source", (N,)
    guidance net    Net(shape, width, depth, num_labels)(x, t, y) -> log h, (N,)
"""

from __future__ import annotations

from typing import Callable

import torch

from tgdp.models.ecg_nets import ClassifierCNN, GuidanceCNN, TimeClassifierCNN
from tgdp.models.mlp import ClassifierMLP, GuidanceMLP, ScoreMLP, TimeClassifierMLP
from tgdp.models.sssd import SSSD

SCORE_NETS: dict[str, Callable[..., torch.nn.Module]] = {"mlp": ScoreMLP, "sssd": SSSD}
CLASSIFIER_NETS: dict[str, Callable[..., torch.nn.Module]] = {"mlp": ClassifierMLP, "cnn": ClassifierCNN}
TIME_CLASSIFIER_NETS: dict[str, Callable[..., torch.nn.Module]] = {"mlp": TimeClassifierMLP, "cnn": TimeClassifierCNN}
GUIDANCE_NETS: dict[str, Callable[..., torch.nn.Module]] = {"mlp": GuidanceMLP, "cnn": GuidanceCNN}


class GaussianSkip(torch.nn.Module):
    """eps(x_t, t) = sigma_t x_t + F(x_t, t): the exact eps of unit-variance Gaussian data plus a learned residual.

    For VP data normalised to unit variance, E[eps | x_t] -> sigma_t x_t wherever the data look Gaussian at
    that noise level (large t); an under-trained F then no longer blows the samples up (measured on the ECG
    simulator: the CPU-size SSSD sampled at 75x the data's std without it). Needs data normalised to std ~1.
    """

    def __init__(self, net: torch.nn.Module, sigma: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.net, self.sigma = net, sigma

    def forward(self, x, t, y=None):
        return self.sigma(t).reshape(-1, *([1] * (x.dim() - 1))) * x + self.net(x, t, y)


class Autocast(torch.nn.Module):
    """Runs ``net`` under bf16 autocast on the input's device and returns float32: mixed precision for the
    big score nets (the matmuls and convolutions in bf16, reductions and normalisations in float32)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x, t, y=None):
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.net(x, t, y).float()


def build(registry: dict[str, Callable[..., torch.nn.Module]], arch: str, shape: tuple[int, ...], width: int,
          depth: int, num_labels: int = 0) -> torch.nn.Module:
    """Construct ``registry[arch]``; unknown keys raise a ValueError listing the known ones."""
    if arch not in registry:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(registry)}")
    return registry[arch](tuple(shape), width=width, depth=depth, num_labels=num_labels)
