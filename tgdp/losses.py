"""TGDP losses (DESIGN §1). Each returns per-sample values, shape (N,); the caller reduces.

Sums run over all non-batch dimensions, so the same functions serve vectors (GMM) and sequences (ECG).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _sum_rest(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(dim=1)


def denoising_score_matching(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """||eps_theta(x_t, t) - eps||^2, the eps-form of denoising score matching."""
    return _sum_rest((eps_pred - eps) ** 2)


def balanced_logistic(logits: torch.Tensor, is_source: torch.Tensor) -> torch.Tensor:
    """Class-balanced logistic loss, source = 1, target = 0.

    Each domain's terms are divided by that domain's count in the batch, so summing the returned
    values averages each domain separately; at the optimum (1 - c)/c = q/p with no n/m factor.
    """
    is_source = is_source.to(logits.dtype)
    n_src = is_source.sum().clamp_min(1.0)
    n_tgt = (1.0 - is_source).sum().clamp_min(1.0)
    weight = is_source / n_src + (1.0 - is_source) / n_tgt
    return 0.5 * weight * F.binary_cross_entropy_with_logits(logits, is_source, reduction="none")


def log_ratio_from_logits(source_logit: torch.Tensor) -> torch.Tensor:
    """log r = log((1 - c) / c) = -logit(c): finite for any logit (no division by a saturated c)."""
    return -source_logit


def ratio_regression(log_h: torch.Tensor, ratio: torch.Tensor, kind: str = "kl") -> torch.Tensor:
    """Regression of h = exp(log_h) onto ratio targets; both kinds are minimised by h = E[ratio | x_t].

    ``mse``: (h - r)^2, the paper's form. Its gradient in log_h is 2 (h - r) h, which vanishes once h
    is small: the net drives h -> 0 on the many low-ratio source points and then cannot learn the rare
    high-ratio ones (measured: the guidance stays flat even with the exact ratio).
    ``kl``: the Bregman divergence of x log x, r log(r / h) - r + h >= 0; gradient h - r never vanishes.
    """
    h = torch.exp(log_h)
    if kind == "mse":
        return (h - ratio) ** 2
    if kind == "kl":
        return torch.xlogy(ratio, ratio) - ratio * log_h - ratio + h
    raise ValueError(f"unknown ratio loss {kind!r}; known: ['kl', 'mse']")


def guidance_regression(log_h: torch.Tensor, ratio: torch.Tensor, kind: str = "kl") -> torch.Tensor:
    """L_guidance per source sample: h_psi(x_t, t) against r(x_0); minimiser is h*."""
    return ratio_regression(log_h, ratio, kind)


def cycle(log_h: torch.Tensor, time_log_ratio: torch.Tensor, kind: str = "kl") -> torch.Tensor:
    """L_cycle per target sample: h_psi(x'_t, t) against (1 - c'(x'_t, t)) / c'(x'_t, t)."""
    return ratio_regression(log_h, torch.exp(time_log_ratio), kind)


def grad_log_h(log_h_fn, x_t: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """nabla_x log h(x_t). With ``create_graph=True`` the result stays differentiable in psi
    (the public reference code omits it, and the consistency term then never trains psi)."""
    with torch.enable_grad():
        x = x_t if x_t.requires_grad else x_t.detach().requires_grad_(True)
        log_h = log_h_fn(x)
        (grad,) = torch.autograd.grad(log_h.sum(), x, create_graph=create_graph)
    return grad


def consistency(eps_source: torch.Tensor, grad_log_h_xt: torch.Tensor, eps: torch.Tensor,
                sigma: torch.Tensor) -> torch.Tensor:
    """sigma_t^2 ||s_theta + grad log h - grad log q(x'_t | x'_0)||^2 in eps form.

    With s_theta = -eps_theta / sigma and grad log q(x_t | x_0) = -eps / sigma this equals
    ||eps_theta - sigma grad log h - eps||^2: the guided eps must denoise the target samples.
    """
    sigma = sigma.reshape(-1, *([1] * (eps.dim() - 1)))
    return _sum_rest((eps_source - sigma * grad_log_h_xt - eps) ** 2)
