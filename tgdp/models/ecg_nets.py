"""1-D CNNs for ECG records: domain classifier, time-dependent classifier and guidance net.

All three share one front end on x (N, leads, L):

    [Conv1d(k=7, stride 2) -> GroupNorm -> (+ per-channel conditioning bias) -> SiLU] x depth
    -> global mean pool over time -> (N, width) features
    -> MLP head on [features, conditioning] -> (N,)

The conditioning vector is the sinusoidal time embedding (timed nets) and a linear embedding of the
multi-hot labels (label-aware nets, num_labels > 0). It enters every conv block as a bias (FiLM-shift),
so the features can depend on (t, y) jointly with x - the joint ratio q(x, y) / p(x, y) needs
x-y interactions, not just an additive label term in the logit - and again at the head.

SiLU and mean pooling (no ReLU / max pool) keep the net smooth in x: the guidance net's input
gradient grad_x log h is used as a score correction and is differentiated again (create_graph) by the
consistency loss. Length-agnostic: any L >= 1 works.

Signatures (tgdp.models registries):
    ClassifierCNN(shape, width, depth, num_labels)(x, y=None)         -> logit of "source", (N,)
    TimeClassifierCNN(shape, width, depth, num_labels)(x, t, y=None)  -> logit of "source", (N,)
    GuidanceCNN(shape, width, depth, num_labels)(x, t, y=None)        -> log h, (N,); h = exp(output)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tgdp.models.sssd import diffusion_time_embedding


def _groups(channels: int) -> int:
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, cond_dim: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, 7, stride=stride, padding=3)
        self.norm = nn.GroupNorm(_groups(c_out), c_out)
        self.cond = nn.Linear(cond_dim, c_out) if cond_dim else None

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        h = self.norm(self.conv(h))
        if self.cond is not None:
            h = h + self.cond(cond)[:, :, None]
        return F.silu(h)


class _ECGNet(nn.Module):
    """Conv front end + MLP head producing one scalar per record; optional time and label conditioning."""

    def __init__(self, shape: tuple[int, ...], width: int, depth: int, num_labels: int, timed: bool, *,
                 head_depth: int = 2, head_width: int | None = None, temb_dim: int = 64, label_dim: int = 32,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if len(shape) != 2:
            raise ValueError(f"ECG nets expect shape (leads, length), got {shape}")
        self.shape = tuple(shape)
        self.leads = shape[0]
        self.num_labels = num_labels
        self.timed = timed
        self.temb_dim = temb_dim
        self.yemb = nn.Linear(num_labels, label_dim) if num_labels else None
        cond_dim = (temb_dim if timed else 0) + (label_dim if num_labels else 0)
        self.temb = nn.Sequential(nn.Linear(temb_dim, temb_dim), nn.SiLU()) if timed else None
        self.blocks = nn.ModuleList(
            _ConvBlock(self.leads if i == 0 else width, width, cond_dim, stride=2) for i in range(max(depth, 1)))
        hw = head_width or width
        layers: list[nn.Module] = []
        d_in = width + cond_dim
        for _ in range(head_depth):
            layers += [nn.Linear(d_in, hw), nn.SiLU(), nn.Dropout(dropout)]
            d_in = hw
        layers.append(nn.Linear(d_in, 1))
        self.head = nn.Sequential(*layers)

    def _cond(self, x: torch.Tensor, t: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor | None:
        parts = []
        if self.temb is not None:
            parts.append(self.temb(diffusion_time_embedding(t.reshape(-1), self.temb_dim).to(x.dtype)))
        if self.yemb is not None:
            if y is None:
                raise ValueError("this network is label-conditional: pass y of shape (N, num_labels)")
            parts.append(self.yemb(y.to(x.dtype)))
        return torch.cat(parts, dim=1) if parts else None

    def scalar(self, x: torch.Tensor, t: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor:
        """(N, leads, L) -> (N,)."""
        if x.dim() != 3 or x.shape[1] != self.leads:
            raise ValueError(f"expected x of shape (N, {self.leads}, L), got {tuple(x.shape)}")
        cond = self._cond(x, t, y)
        h = x
        for block in self.blocks:
            h = block(h, cond)
        feats = h.mean(dim=2)
        if cond is not None:
            feats = torch.cat([feats, cond], dim=1)
        return self.head(feats).squeeze(1)


class ClassifierCNN(_ECGNet):
    """Domain classifier: logit of P(source | x[, y]), x (N, leads, L) -> (N,)."""

    def __init__(self, shape: tuple[int, ...], width: int = 64, depth: int = 4, num_labels: int = 0, **kw) -> None:
        super().__init__(shape, width, depth, num_labels, timed=False, **kw)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.scalar(x, None, y)


class TimeClassifierCNN(_ECGNet):
    """Time-dependent domain classifier: logit of P(source | x_t[, y], t), (N, leads, L), (N,) -> (N,)."""

    def __init__(self, shape: tuple[int, ...], width: int = 64, depth: int = 4, num_labels: int = 0, **kw) -> None:
        super().__init__(shape, width, depth, num_labels, timed=True, **kw)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.scalar(x, t, y)


class GuidanceCNN(_ECGNet):
    """Guidance net: f = log h_psi(x_t, t[, y]), (N, leads, L), (N,) -> (N,); h = exp(f) > 0 by construction."""

    def __init__(self, shape: tuple[int, ...], width: int = 64, depth: int = 4, num_labels: int = 0, *,
                 zero_init: bool = True, **kw) -> None:
        super().__init__(shape, width, depth, num_labels, timed=True, **kw)
        if zero_init:
            # Start at log h = 0 (h = 1: no guidance) so an untrained net leaves the source sampler as is.
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.scalar(x, t, y)
