"""What the stages share: label look-up and the forward diffusion of a minibatch.

``data`` is a dict of tensors: source_x (m, *shape), target_x (n, *shape) and, for the conditional
version, source_y / target_y (N, num_labels).
"""

from __future__ import annotations

import torch

from tgdp.schedules import VPSchedule


def labels(data: dict, key: str, conditional: bool) -> torch.Tensor | None:
    """``data[key]`` when the stage is conditional (None otherwise); a conditional stage without labels fails
    here, before any training, naming the missing key."""
    if not conditional:
        return None
    if data.get(key) is None:
        raise ValueError(f"conditional=True needs labels under {key!r}")
    return data[key]


def num_labels(data: dict, conditional: bool) -> int:
    """Label width of the conditional nets (0: unconditional)."""
    return int(labels(data, "source_y", conditional).shape[1]) if conditional else 0


def noised(x0: torch.Tensor, schedule: VPSchedule, g: torch.Generator,
           power: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, t, eps) for a batch x0 (B, *shape): t (B,) from ``schedule.sample_t`` then eps, both from ``g``
    in that order (the draw order every checkpoint's generator state relies on)."""
    t = schedule.sample_t(x0.shape[0], generator=g, power=power).to(x0.device)
    eps = torch.randn(x0.shape, generator=g).to(x0.device)
    shape = (-1,) + (1,) * (x0.dim() - 1)
    x_t = schedule.alpha(t).reshape(shape) * x0 + schedule.sigma(t).reshape(shape) * eps
    return x_t, t, eps
