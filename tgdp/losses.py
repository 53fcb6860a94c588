"""TGDP losses (DESIGN §1). Each returns per-sample values, shape (N,); the caller reduces.

Sums run over all non-batch dimensions, so the same functions serve vectors (GMM) and sequences (ECG).
"""

from __future__ import annotations

import math

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
    """L_guidance per source sample: h_psi(x_t, t) against r(x_0) or its posterior mean; minimiser is h*."""
    return ratio_regression(log_h, ratio, kind)


def posterior_log_ratio(x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, x0_ref: torch.Tensor,
                        log_ratio_ref: torch.Tensor, same_label: torch.Tensor | None = None,
                        log_ref_weight: torch.Tensor | None = None) -> torch.Tensor:
    """log E[r(x_0) | x_t] under the empirical reference set: log sum_j w_j r_j - log sum_j w_j with
    w_j = N(x_t; alpha_t x0_j, sigma_t^2 I) (a Rao-Blackwellised regression target).

    Regressing h onto this posterior mean instead of the single r(x_0) that produced x_t has the same
    minimiser when the reference set is the whole training set (h* of the empirical source) but far
    less variance, because the importance weights r are heavy-tailed (cf. Xu et al. 2023, "Stable
    Target Field"). ``same_label`` (B, R) bool restricts each row to references with its label
    (the conditional version); every row must keep at least one reference, e.g. its own x_0.
    ``log_ref_weight`` (R,) multiplies each reference's kernel, for references drawn from a mixture of
    domains (see ``pooled_reference_log_weights``).
    """
    flat_t, flat_0 = x_t.reshape(x_t.shape[0], -1), x0_ref.reshape(x0_ref.shape[0], -1)
    a, s2 = alpha.reshape(-1, 1), sigma.reshape(-1, 1) ** 2
    # ||x_t - a x0||^2 expanded, so the (B, R) matrix costs one matmul whatever the dimension
    sq = (flat_t ** 2).sum(1, keepdim=True) - 2 * a * (flat_t @ flat_0.T) + a ** 2 * (flat_0 ** 2).sum(1)
    log_w = -sq.clamp_min(0) / (2 * s2)
    if log_ref_weight is not None:
        log_w = log_w + log_ref_weight
    if same_label is not None:
        log_w = log_w.masked_fill(~same_label, float("-inf"))
    return torch.logsumexp(log_w + log_ratio_ref, 1) - torch.logsumexp(log_w, 1)


def pooled_reference_log_weights(log_ratio_ref: torch.Tensor, is_source: torch.Tensor, m: int, n: int,
                                 num_source_refs: int) -> torch.Tensor:
    """log weights that let source and target points both serve as references of p in ``posterior_log_ratio``.

    The pooled points come from (m p + n q) / (m + n); weighting each by 1 / (m + n r) turns them into
    draws of p (the balance heuristic of multiple importance sampling), so that the numerator of
    E[r(x_0) | x_t], a kernel estimate of q_t, also uses the n target points, where the m source points
    are few: their importance weights r have an ESS of ~2% of m on the GMM. Each of the
    ``num_source_refs`` source references stands for m / num_source_refs source points.
    """
    log_mix = torch.logaddexp(torch.full_like(log_ratio_ref, math.log(m)), math.log(max(n, 1)) + log_ratio_ref)
    log_count = torch.where(is_source, math.log(m / num_source_refs), 0.0)
    return log_count - log_mix


def cycle(log_h: torch.Tensor, time_log_ratio: torch.Tensor) -> torch.Tensor:
    """L_cycle per target sample: h_psi(x'_t, t) against (1 - c'(x'_t, t)) / c'(x'_t, t), in log space.

    The target is a fixed function of x'_t (not a noisy sample, unlike L_guidance's r(x_0)), so every
    pointwise loss has the paper's minimiser h = c'-ratio; the squared log error keeps the gradient at
    the size of the log error. The paper's (h - r')^2, or the KL form, scales it with r', which reaches
    e^8 at target points and then swamps L_guidance (measured on the GMM at n = 1000 with the exact
    ratio: energy distance 0.109 with eta_1 = 1 in the KL form, 0.0135 without the term).
    """
    return (log_h - time_log_ratio) ** 2


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
