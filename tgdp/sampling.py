"""All sampling: the solvers, the eps-functions they are driven with, and the batched, rank-chunked draw.

Three layers, read top to bottom:
1. eps-functions: an eps-function maps (x_t, t) -> eps with x_t (B, *shape) and t (B,). A score net gives
   one (``model_eps``); guidance composes by wrapping it (``guided_eps``, ``tgdp_eps``,
   ``oracle_guidance_eps``, ``domain_guidance_eps``), never by flags inside the solvers.
2. solvers: pure functions of (eps-function, schedule, initial noise, steps) (``SOLVERS``).
3. draws: ``sample`` splits cfg.num_samples into per-rank chunks and batches, the initial noise a function
   of the seed alone; ``sample_eps``, ``tgdp_samples``, ``oracle_guidance_samples`` and ``model_samples``
   draw with per-sample labels (``label_draw``) following their samples.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from tgdp import distributed as D
from tgdp import losses, seeds
from tgdp.config import SampleConfig
from tgdp.schedules import VPSchedule

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GradFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(x_t, t) -> grad_x log h(x_t, t) (B, *shape)."""


# --- eps-functions ------------------------------------------------------------------------------------------


def guided_eps(eps_fn: EpsFn, grad_log_h_fn: GradFn,
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


def model_eps(model: nn.Module, y: torch.Tensor | None = None) -> EpsFn:
    """eps-function of a score net; y (batch, num_labels) fixes the labels of the conditional version."""
    def eps(x, t):
        return model(x, t, y)
    return eps


def guidance_grad(h: nn.Module, y: torch.Tensor | None = None) -> GradFn:
    """(x_t, t) -> grad_x log h_psi(x_t, t[, y]) (no graph kept: sampling only)."""
    def grad(x, t):
        return losses.grad_log_h(lambda z: h(z, t, y), x, create_graph=False)
    return grad


def tgdp_eps(score_model: nn.Module, h: nn.Module, schedule: VPSchedule, scale: float,
             y: torch.Tensor | None = None, t_max: float = 1.0) -> EpsFn:
    """The guided target eps: eps_theta - scale * sigma_t * grad log h_psi (for t <= t_max)."""
    return guided_eps(model_eps(score_model, y), guidance_grad(h, y), schedule, scale, t_max)


def oracle_guidance_eps(score_model: nn.Module, grad_log_h: GradFn, schedule: VPSchedule,
                        y: torch.Tensor | None = None, t_max: float = 1.0) -> EpsFn:
    """The learned eps guided by an exact ``grad_log_h`` (e.g. the GMM's grad log h*), cut off above ``t_max``
    as ``tgdp_eps`` is, so the oracle and TGDP differ only in h. Scale 1: a guidance scale compensates a
    learned h, the exact one needs none."""
    return guided_eps(model_eps(score_model, y), grad_log_h, schedule, 1.0, t_max)


def domain_guidance_eps(source_eps: EpsFn, finetuned_eps: EpsFn, weight: float) -> EpsFn:
    """Domain Guidance (Zhong et al., ICLR 2025): eps_src + weight * (eps_ft - eps_src), both (B, *shape).

    Classifier-free guidance with the source model as the unconditional branch: its score is that of
    q_ft,t^w p_t^(1-w) at each t (as in CFG, not the noised marginal of one tilted density), so w > 1 pushes
    the samples away from what the source already explains.
    ``weight`` = 1 is plain fine-tuning and returns ``finetuned_eps`` itself (the source net is not evaluated
    and the samples are bit-identical to finetune's; a + (b - a) need not equal b in floating point).
    A conditional pair is built with the same labels in both (``model_eps(net, y)``).
    """
    if weight == 1:
        return finetuned_eps

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e_src = source_eps(x, t)
        return e_src + weight * (finetuned_eps(x, t) - e_src)

    return eps


# --- solvers ------------------------------------------------------------------------------------------------

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


# --- draws --------------------------------------------------------------------------------------------------

def sample(cfg: SampleConfig, make_eps: Callable[[slice], EpsFn], shape: tuple[int, ...], schedule: VPSchedule,
           device: torch.device) -> torch.Tensor:
    """Draw cfg.num_samples samples of ``shape`` with the configured solver; returns them (num, *shape) on CPU.

    ``make_eps(rows)`` gives the eps-function for the batch of sample indices ``rows`` (so per-sample
    labels can follow their samples). The initial noise depends only on cfg.seed, so dpm2 samples do not
    depend on the batch size or on the number of ranks; ddpm's per-step noise is seeded per batch by its
    first row (``seeds.ddpm_chunk``), so it is reproducible for a given batching. Each rank samples an
    equal chunk; collective under torch.distributed.
    """
    if cfg.solver not in SOLVERS:
        raise ValueError(f"unknown solver {cfg.solver!r}; known: {sorted(SOLVERS)}")
    noise = torch.randn((cfg.num_samples, *shape), generator=torch.Generator().manual_seed(cfg.seed))
    chunk = -(-cfg.num_samples // D.world_size())
    lo = D.rank() * chunk
    out = []
    for start in range(lo, lo + chunk, cfg.batch_size):
        stop = min(start + cfg.batch_size, lo + chunk, cfg.num_samples)
        if stop <= start:
            break
        eps_fn = make_eps(slice(start, stop))
        z = noise[start:stop].to(device)
        if cfg.solver == "dpm2":
            x = SOLVERS["dpm2"](eps_fn, schedule, z, steps=cfg.steps)
        else:
            gen = torch.Generator(device=device).manual_seed(seeds.ddpm_chunk(cfg.seed, start))
            x = SOLVERS["ddpm"](eps_fn, schedule, z, steps=cfg.steps, generator=gen)
        out.append(x.detach())
    mine = torch.cat(out) if out else noise[:0].to(device)
    if mine.shape[0] < chunk:  # pad the last rank's chunk so all_gather sees equal sizes
        mine = torch.cat([mine, mine.new_zeros((chunk - mine.shape[0], *shape))])
    return D.all_gather_rows(mine, cfg.num_samples).cpu()


def label_draw(data: dict, num: int, seed: int) -> torch.Tensor | None:
    """Labels (num, num_labels) for conditional sampling, drawn from the target's empirical label distribution
    (None when the data has no labels)."""
    if data.get("target_y") is None:
        return None
    g = torch.Generator().manual_seed(seeds.label_draw(seed))
    idx = torch.randint(0, data["target_y"].shape[0], (num,), generator=g)
    return data["target_y"][idx]


def sample_eps(cfg: SampleConfig, eps_of_labels: Callable[[torch.Tensor | None], EpsFn], shape: tuple[int, ...],
               schedule: VPSchedule, device: torch.device, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Sample with an eps-function built per batch from that batch's labels (None when unconditional)."""
    def make(rows: slice) -> EpsFn:
        return eps_of_labels(None if labels is None else labels[rows].to(device))
    return sample(cfg, make, shape, schedule, device)


def tgdp_samples(cfg: SampleConfig, source_model: nn.Module, h: nn.Module, schedule: VPSchedule,
                 device: torch.device, shape: tuple[int, ...], labels: torch.Tensor | None = None,
                 scale: float | None = None) -> torch.Tensor:
    """Guided samples: eps_theta - gamma sigma_t grad log h_psi, the guidance only for t <= cfg.guidance_t_max."""
    gamma = cfg.guidance_scale if scale is None else scale
    return sample_eps(cfg, lambda y: tgdp_eps(source_model, h, schedule, gamma, y, cfg.guidance_t_max),
                      shape, schedule, device, labels)


def oracle_guidance_samples(cfg: SampleConfig, source_model: nn.Module, grad_log_h: GradFn, schedule: VPSchedule,
                            device: torch.device, shape: tuple[int, ...],
                            labels: torch.Tensor | None = None) -> torch.Tensor:
    """Samples of ``oracle_guidance_eps`` (the learned source eps + an exact grad log h, cut off above
    cfg.guidance_t_max as ``tgdp_samples`` is)."""
    return sample_eps(cfg, lambda y: oracle_guidance_eps(source_model, grad_log_h, schedule, y, cfg.guidance_t_max),
                      shape, schedule, device, labels)


def model_samples(cfg: SampleConfig, model: nn.Module, schedule: VPSchedule, device: torch.device,
                  shape: tuple[int, ...], labels: torch.Tensor | None = None) -> torch.Tensor:
    """Unguided samples of a score net (the baselines, and the source model alone)."""
    return sample_eps(cfg, lambda y: model_eps(model, y), shape, schedule, device, labels)
