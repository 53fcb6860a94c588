"""Noise schedules: the VP linear continuous schedule and the discrete DDPM schedule.

Both describe the forward kernel x_t = alpha_t x_0 + sigma_t eps. Models take continuous time
t in (0, 1]; the discrete DDPM schedule with T steps and linear beta from 1e-4 to 0.02 is the
discretisation of the VP schedule with beta(t) from 0.1 to 20 (beta_i = beta(t_i) / T), so one trained
model serves both samplers.
"""

from __future__ import annotations


from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class VPSchedule:
    """Continuous VP-SDE schedule with linear beta(t) = beta_min + t (beta_max - beta_min)."""

    beta_min: float = 0.1  # beta at t = 0
    beta_max: float = 20.0  # beta at t = 1
    t_min: float = 1e-3  # smallest time used for training and sampling

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        """log alpha_t = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        # -expm1(2 log alpha) = 1 - alpha^2 without cancellation at small t.
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def lam(self, t: torch.Tensor) -> torch.Tensor:
        """Half log-SNR lambda_t = log(alpha_t / sigma_t), decreasing in t."""
        log_a = self.log_alpha(t)
        return log_a - 0.5 * torch.log(-torch.expm1(2.0 * log_a))

    def t_of_lam(self, lam: torch.Tensor) -> torch.Tensor:
        """Inverse of ``lam`` (closed form for the linear schedule, as in DPM-Solver)."""
        log_term = torch.logaddexp(-2.0 * lam, torch.zeros_like(lam))  # log(exp(-2 lam) + 1)
        db = self.beta_max - self.beta_min
        return 2.0 * log_term / (torch.sqrt(self.beta_min**2 + 2.0 * db * log_term) + self.beta_min)

    def sample_t(self, n: int, generator: torch.Generator | None = None, device=None,
                 power: float = 1.0) -> torch.Tensor:
        """Training times t = t_min + (1 - t_min) u^power, u ~ U(0, 1): uniform for power = 1, denser
        at small t for power > 1 (where the regression signal lives; per-t minimisers are unchanged)."""
        u = torch.rand(n, generator=generator, device=device)
        return self.t_min + (1.0 - self.t_min) * u**power


@dataclass(frozen=True)
class DiscreteSchedule:
    """DDPM schedule: T steps, linear beta_i from beta_1 to beta_T; step i sits at time t = i / T."""

    num_steps: int = 1000  # T
    beta_start: float = 1e-4  # beta_1
    beta_end: float = 0.02  # beta_T

    def betas(self) -> torch.Tensor:
        return torch.linspace(self.beta_start, self.beta_end, self.num_steps, dtype=torch.float64)

    def alpha_bar(self) -> torch.Tensor:
        return torch.cumprod(1.0 - self.betas(), dim=0)

    def alphas(self) -> torch.Tensor:
        """alpha_t = sqrt(alpha_bar_t) for steps 1..T."""
        return self.alpha_bar().sqrt().float()

    def sigmas(self) -> torch.Tensor:
        return (1.0 - self.alpha_bar()).sqrt().float()

    def times(self) -> torch.Tensor:
        """Continuous time of each step, i / T for i = 1..T, as the model expects."""
        return torch.arange(1, self.num_steps + 1, dtype=torch.float32) / self.num_steps

    def matching_vp(self) -> VPSchedule:
        """The continuous schedule this discretises."""
        return VPSchedule(beta_min=self.beta_start * self.num_steps, beta_max=self.beta_end * self.num_steps)


