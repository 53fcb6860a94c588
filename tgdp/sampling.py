"""Samplers: pure functions of (eps-function, schedule, initial noise, steps).

An eps-function maps (x_t, t) -> eps with t of shape (N,). Guidance composes by wrapping it
(``guided_eps``), never by flags inside the solvers. Everything is batched over samples.
"""

from __future__ import annotations

from typing import Callable

import torch

from tgdp.schedules import VPSchedule

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guided_eps(eps_fn: EpsFn, grad_log_h_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               schedule: VPSchedule, scale: float = 1.0, t_max: float = 1.0) -> EpsFn:
    """eps_target = eps_theta(x_t, t) - scale * sigma_t * grad_x log h(x_t, t), the guidance only where t <= t_max.

    From s = -eps / sigma and grad log q_t = grad log p_t + grad log h*; the minus sign and the
    sigma_t factor are both required (the public code drops or flips them). h* -> 1 as t -> 1, so a
    ``t_max`` < 1 drops only the large-t part, where a learned h has nothing to fit and extrapolates.
    """

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        on = t <= t_max
        if not bool(on.any()):  # the solvers step a whole batch at one t: skip the guidance net
            return eps_fn(x, t)
        shape = (-1, *([1] * (x.dim() - 1)))
        weight = scale * schedule.sigma(t).reshape(shape) * on.to(x.dtype).reshape(shape)
        return eps_fn(x, t) - weight * grad_log_h_fn(x, t)

    return eps



def dpm_solver_2(eps_fn: EpsFn, schedule: VPSchedule, noise: torch.Tensor, steps: int = 25,
                 t_end: float | None = None, denoise_last: bool = True) -> torch.Tensor:
    """Deterministic single-step DPM-Solver-2 (Lu et al. 2022) from t = 1 to t_end on a uniform
    log-SNR grid: 2 eps evaluations per step. ``denoise_last`` returns the x_0 estimate at t_end."""
    t_end = schedule.t_min if t_end is None else t_end
    one = torch.ones(1, dtype=torch.float64)
    lam = torch.linspace(schedule.lam(one).item(), schedule.lam(one * t_end).item(), steps + 1, dtype=torch.float64)
    ts = schedule.t_of_lam(lam).to(noise.dtype).to(noise.device)
    ts[0], ts[-1] = 1.0, t_end
    x = noise
    n = x.shape[0]
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        lam_t, lam_next = schedule.lam(t), schedule.lam(t_next)
        h = lam_next - lam_t
        s = schedule.t_of_lam(lam_t + 0.5 * h)
        eps_t = eps_fn(x, t.expand(n))
        u = (schedule.alpha(s) / schedule.alpha(t)) * x - schedule.sigma(s) * torch.expm1(0.5 * h) * eps_t
        eps_s = eps_fn(u, s.expand(n))
        x = (schedule.alpha(t_next) / schedule.alpha(t)) * x - schedule.sigma(t_next) * torch.expm1(h) * eps_s
    if denoise_last:
        t = ts[-1]
        x = (x - schedule.sigma(t) * eps_fn(x, t.expand(n))) / schedule.alpha(t)
    return x


def ddpm_ancestral(eps_fn: EpsFn, schedule: VPSchedule, noise: torch.Tensor, steps: int = 1000,
                   generator: torch.Generator | None = None, t_end: float | None = None) -> torch.Tensor:
    """Ancestral sampling with the DDPM posterior q(x_s | x_t, x0_hat) on a uniform time grid from 1
    to t_end. With steps = T on the matching discrete schedule this is exactly DDPM; fewer steps
    give the respaced sampler. The last step returns the posterior mean (no noise)."""
    t_end = schedule.t_min if t_end is None else t_end
    ts = torch.linspace(1.0, t_end, steps + 1, dtype=noise.dtype, device=noise.device)
    x = noise
    n = x.shape[0]
    for i in range(steps):
        t, s = ts[i], ts[i + 1]
        a_t, a_s, sig_t, sig_s = schedule.alpha(t), schedule.alpha(s), schedule.sigma(t), schedule.sigma(s)
        eps = eps_fn(x, t.expand(n))
        x0 = (x - sig_t * eps) / a_t
        a_ts = a_t / a_s
        var_ts = sig_t**2 - a_ts**2 * sig_s**2
        mean = (a_ts * sig_s**2 / sig_t**2) * x + (a_s * var_ts / sig_t**2) * x0
        if i == steps - 1:
            return x0
        std = torch.sqrt(var_ts * sig_s**2 / sig_t**2)
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = mean + std * z
    return x


SOLVERS = {"dpm2": dpm_solver_2, "ddpm": ddpm_ancestral}
