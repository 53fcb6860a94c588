"""SSSD-ECG-like eps-network (Alcaraz & Strodthoff 2023) in plain PyTorch, with diagonal S4 (S4D) layers.

Architecture (as SSSD / DiffWave, sized by ``width`` = residual channels C and ``depth`` = residual layers):

    x (N, 8, L) --1x1 conv + ReLU--> (N, C, L) --[ResidualBlock] x depth--> sum of skips * sqrt(1/depth)
        --1x1 conv + ReLU--> --1x1 conv (zero-initialised)--> eps (N, 8, L)

    ResidualBlock(h; temb, yemb):
        u = h + Linear(temb)                         diffusion-time conditioning, per channel
        u = Conv1d(C -> 2C, kernel 3)(u)
        u = S4Layer(u)                               bidirectional S4D + residual + LayerNorm
        u = u + Linear(yemb)                         multi-hot label conditioning (SSSD adds it here)
        u = S4Layer(u)
        g = tanh(u[:C]) * sigmoid(u[C:])             gated activation (WaveNet)
        return (h + Conv1x1(g)) / sqrt(2),  Conv1x1(g) as skip

Time t in (0, 1] is embedded as DiffWave's sinusoidal step embedding of 1000 t followed by a 2-layer
SiLU MLP shared by all blocks. Labels y (N, num_labels) float (multi-hot) go through a linear
embedding shared by all blocks. Everything is length-agnostic: the S4D kernel is generated for the L
of the input, so any L (odd, short) works.

S4D (Gu et al. 2022, "On the parameterization and initialization of diagonal state space models"):
a diagonal continuous SSM x' = A x + B u, y = Re(C x) per channel, discretised with zero-order hold at
step dt, has the convolution kernel K[l] = 2 Re(sum_n C_n (exp(dt A_n) - 1)/A_n * exp(dt A_n l)),
a Vandermonde product; B is folded into C. Conjugate pairs are kept implicit (hence the factor 2 and
N/2 stored modes). The kernel is applied with an FFT convolution of length 2L (no wrap-around).
Bidirectional: a second kernel runs anti-causally (flipped) in the same FFT.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def diffusion_time_embedding(t: torch.Tensor, dim: int = 128, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding of continuous time, DiffWave-style, of shape (N, dim).

    t (N,) in (0, 1] is multiplied by ``scale`` so that the frequencies (1 ... 1e-4 per unit) resolve
    the same range as the discrete 1..1000 steps the architecture was designed for.
    """
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
    arg = (scale * t.float())[:, None] * freqs[None, :]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class S4DKernel(nn.Module):
    """Diagonal SSM convolution kernels, ``channels`` per feature (2 for bidirectional).

    Parameters (per channel c, feature h, mode n): log dt (H,), C (channels, H, N/2) complex,
    A_n = -exp(log_A_real) + i A_imag (trainable). Init "lin": A = -1/2 + i pi n (S4D-Lin);
    "inv": A = -1/2 + i N/pi (N/(2n+1) - 1) (S4D-Inv).
    """

    def __init__(self, features: int, state_size: int = 64, channels: int = 2, init: str = "lin",
                 dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        super().__init__()
        if state_size % 2:
            raise ValueError(f"state_size must be even (conjugate pairs), got {state_size}")
        if init not in ("lin", "inv"):
            raise ValueError(f"init must be 'lin' or 'inv', got {init!r}")
        half = state_size // 2
        # log-uniform dt in [dt_min, dt_max]: features see time scales from ~10 to ~1000 samples.
        self.log_dt = nn.Parameter(torch.rand(features) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        # Complex C stored as real pairs so optimisers and state dicts stay real-valued.
        self.C = nn.Parameter(torch.view_as_real(torch.randn(channels, features, half, dtype=torch.cfloat) * 0.5 ** 0.5))
        n = torch.arange(half, dtype=torch.float32)
        imag = math.pi * n if init == "lin" else state_size / math.pi * (state_size / (2 * n + 1) - 1)
        self.log_A_real = nn.Parameter(torch.log(0.5 * torch.ones(features, half)))
        self.A_imag = nn.Parameter(imag.repeat(features, 1))

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(dtA (H, N/2), C_bar (channels, H, N/2)) complex: the ZOH-discretised diagonal system."""
        dt = torch.exp(self.log_dt)
        A = -torch.exp(self.log_A_real) + 1j * self.A_imag
        dtA = A * dt[:, None]
        C = torch.view_as_complex(self.C) * (torch.exp(dtA) - 1.0) / A
        return dtA, C

    def forward(self, length: int) -> torch.Tensor:
        """Kernels of shape (channels, H, length): K[c, h, l] = 2 Re sum_n C_bar[c,h,n] exp(dtA[h,n] l)."""
        dtA, C = self.discrete()
        pos = torch.arange(length, device=dtA.device, dtype=torch.float32)
        vander = torch.exp(dtA[:, :, None] * pos)  # (H, N/2, L): the Vandermonde matrix
        return 2.0 * torch.einsum("chn,hnl->chl", C, vander).real


def fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal (k (H, L)) or bidirectional (k (2, H, L)) long convolution of u (N, H, L) via FFT.

    Causal: y[i] = sum_{j<=i} k[i-j] u[j]. Bidirectional adds the anti-causal
    sum_{j>i} k2[j-i-1] u[j]. Zero-padding to 2L removes the circular wrap-around.
    """
    L = u.shape[-1]
    u = u.float()  # cuFFT has no bf16 (and fp16 only for powers of two): under autocast the FFTs stay fp32
    if k.dim() == 3:
        k = F.pad(k[0], (0, L)) + F.pad(k[1].flip(-1), (L, 0))  # (H, 2L): causal part then flipped tail
    k_f = torch.fft.rfft(k, n=2 * L)
    u_f = torch.fft.rfft(u, n=2 * L)
    return torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]


class S4DLayer(nn.Module):
    """One S4D sequence layer on (N, H, L): SSM convolution + D skip, GELU, dropout, 1x1 conv + GLU."""

    def __init__(self, features: int, state_size: int = 64, bidirectional: bool = True, init: str = "lin",
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.kernel = S4DKernel(features, state_size, channels=2 if bidirectional else 1, init=init)
        self.bidirectional = bidirectional
        self.D = nn.Parameter(torch.randn(features))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Conv1d(features, 2 * features, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        k = self.kernel(u.shape[-1])
        y = fft_conv(u, k if self.bidirectional else k[0]) + u * self.D[:, None]
        return F.glu(self.out(self.dropout(F.gelu(y))), dim=1)


class S4Block(nn.Module):
    """SSSD's S4Layer: S4D layer, dropout, residual, LayerNorm over channels. (N, H, L) -> (N, H, L)."""

    def __init__(self, features: int, state_size: int, dropout: float, init: str) -> None:
        super().__init__()
        self.s4 = S4DLayer(features, state_size, bidirectional=True, init=init, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.s4(x)) + x
        return self.norm(h.transpose(1, 2)).transpose(1, 2)


class ResidualBlock(nn.Module):
    """Gated residual block with two S4 layers; returns (residual output (N, C, L), skip (N, C, L)).

    ``residual=False`` (the last block) returns the input unchanged as its residual output."""

    def __init__(self, channels: int, temb_dim: int, label_dim: int, state_size: int, dropout: float,
                 init: str, residual: bool = True) -> None:
        super().__init__()
        self.time = nn.Linear(temb_dim, channels)
        self.conv = nn.Conv1d(channels, 2 * channels, 3, padding=1)
        self.s4_a = S4Block(2 * channels, state_size, dropout, init)
        self.label = nn.Linear(label_dim, 2 * channels) if label_dim else None
        self.s4_b = S4Block(2 * channels, state_size, dropout, init)
        # The last block's residual output is never read (only skips reach the head): no dead conv there,
        # so every parameter gets a gradient (gradient averaging across ranks expects that).
        self.res = nn.Conv1d(channels, channels, 1) if residual else None
        self.skip = nn.Conv1d(channels, channels, 1)
        nn.init.kaiming_normal_(self.conv.weight)
        nn.init.kaiming_normal_(self.skip.weight)
        if self.res is not None:
            nn.init.kaiming_normal_(self.res.weight)

    def forward(self, h: torch.Tensor, temb: torch.Tensor, yemb: torch.Tensor | None):
        u = self.s4_a(self.conv(h + self.time(temb)[:, :, None]))
        if self.label is not None:
            u = u + self.label(yemb)[:, :, None]
        u = self.s4_b(u)
        c = u.shape[1] // 2
        g = torch.tanh(u[:, :c]) * torch.sigmoid(u[:, c:])
        if self.res is None:
            return h, self.skip(g)
        # 1/sqrt(2) keeps the residual stream's variance constant with depth (DiffWave).
        return (h + self.res(g)) * math.sqrt(0.5), self.skip(g)


class SSSD(nn.Module):
    """eps_theta(x_t, t[, y]) for ECG: x (N, leads, L), t (N,), y (N, num_labels) -> eps (N, leads, L).

    Registry signature ``SSSD(shape, width, depth, num_labels)`` with shape = (leads, length); the length
    is informational only (any L runs). Paper size: width 256, depth 36, state_size 64 (GPU); the
    defaults are a small CPU network. ``zero_init`` zero-initialises the output conv (DiffWave's
    ZeroConv1d) so the untrained net predicts eps = 0, which keeps deep stacks stable early on.
    """

    def __init__(self, shape: tuple[int, ...], width: int = 64, depth: int = 4, num_labels: int = 0, *,
                 state_size: int = 64, dropout: float = 0.0, init: str = "lin", temb_dim: int = 128,
                 temb_hidden: int = 512, label_dim: int = 128, zero_init: bool = True) -> None:
        super().__init__()
        if len(shape) != 2:
            raise ValueError(f"SSSD expects shape (leads, length), got {shape}")
        self.shape = tuple(shape)
        self.leads = shape[0]
        self.num_labels = num_labels
        self.temb_dim = temb_dim
        self.inp = nn.Conv1d(self.leads, width, 1)
        self.temb = nn.Sequential(nn.Linear(temb_dim, temb_hidden), nn.SiLU(), nn.Linear(temb_hidden, temb_hidden),
                                  nn.SiLU())
        self.yemb = nn.Linear(num_labels, label_dim) if num_labels else None
        self.blocks = nn.ModuleList(
            ResidualBlock(width, temb_hidden, label_dim if num_labels else 0, state_size, dropout, init,
                          residual=i < depth - 1)
            for i in range(depth))
        self.head = nn.Conv1d(width, width, 1)
        self.out = nn.Conv1d(width, self.leads, 1)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] != self.leads:
            raise ValueError(f"expected x of shape (N, {self.leads}, L), got {tuple(x.shape)}")
        yemb = None
        if self.yemb is not None:
            if y is None:
                raise ValueError("this network is label-conditional: pass y of shape (N, num_labels)")
            yemb = self.yemb(y.to(x.dtype))
        temb = self.temb(diffusion_time_embedding(t.reshape(-1), self.temb_dim).to(x.dtype))
        h = F.relu(self.inp(x))
        skip = torch.zeros_like(h)
        for block in self.blocks:
            h, s = block(h, temb, yemb)
            skip = skip + s
        skip = skip * math.sqrt(1.0 / max(len(self.blocks), 1))
        return self.out(F.relu(self.head(skip)))
