"""One Gaussian mixture sum_k w_k N(mu_k, diag(s_k^2)) in R^d, in closed form at every diffusion time.

Under the forward kernel x_t = alpha_t x_0 + sigma_t eps every component stays Gaussian:
N(alpha_t mu_k, diag(alpha_t^2 s_k^2 + sigma_t^2)), with the same weights. Hence exact noised log
densities, per-component posteriors and scores (``alpha``/``sigma`` per sample; None = t = 0, the clean law).

Two arithmetic paths, same maths: when every component and coordinate shares one variance (the paper's
testbed) the variance is a scalar per sample, exactly the arithmetic of the original two-mode class, so its
values stay bit-for-bit; otherwise a (N, K, d) variance. Likewise equal weights subtract log K and draw
labels with ``torch.randint`` (the paper's RNG order); unequal weights add log w_k and draw with
``torch.multinomial``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from tgdp.data.testbeds import MixtureSpec


def _clean_time(x: torch.Tensor, alpha: torch.Tensor | None, sigma: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    if alpha is None:
        n = x.shape[0]
        return torch.ones(n, dtype=x.dtype, device=x.device), torch.zeros(n, dtype=x.dtype, device=x.device)
    return alpha, sigma


class Mixture:
    """sum_k w_k N(mu_k, diag(s_k^2)): means (K, d), ``variance`` one float (isotropic, shared) or (K, d),
    ``weights`` (K,) summing to 1 (None = equal). x is (N, d); alpha, sigma are (N,) or None (t = 0)."""

    def __init__(self, means: torch.Tensor, variance: float | Sequence[Sequence[float]],
                 weights: Sequence[float] | None = None) -> None:
        spec = MixtureSpec(tuple(tuple(float(v) for v in m) for m in means.tolist()),
                           variance if isinstance(variance, (int, float))
                           else tuple(tuple(float(v) for v in row) for row in variance),
                           None if weights is None else tuple(float(w) for w in weights))  # validates
        self.means = means  # (K, d) float32
        self.var = spec.shared_variance  # the one isotropic variance s^2 (a Python float), or None
        k, d = means.shape
        self.variances = (torch.full((k, d), self.var, dtype=torch.float64) if self.var is not None
                          else torch.tensor(spec.variance, dtype=torch.float64))  # (K, d)
        self.weights = torch.tensor(spec.weight_list(), dtype=torch.float64)  # (K,)
        self.equal_weights = spec.equal_weights
        self._stds = self.variances.sqrt().float()  # (K, d), sampling of the general path

    @classmethod
    def from_spec(cls, spec: MixtureSpec) -> Mixture:
        return cls(torch.tensor(spec.means, dtype=torch.float32), spec.variance, spec.weights)

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def noised(self, alpha: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Component means (N, K, d) and variances of the marginal at time t: (N,) when one variance is
        shared (alpha^2 s^2 + sigma^2), else (N, K, d)."""
        means = alpha[:, None, None] * self.means[None].to(device=alpha.device, dtype=alpha.dtype)
        if self.var is not None:
            return means, alpha**2 * self.var + sigma**2
        return means, alpha[:, None, None] ** 2 * self.variances[None].to(alpha) + sigma[:, None, None] ** 2

    def component_log_probs(self, x: torch.Tensor, alpha: torch.Tensor | None = None,
                            sigma: torch.Tensor | None = None) -> torch.Tensor:
        """log(w_k N(x; alpha mu_k, diag(alpha^2 s_k^2 + sigma^2))), shape (N, K)."""
        d = x.shape[1]
        means, var = self.noised(*_clean_time(x, alpha, sigma))
        if self.var is not None:
            sq = ((x[:, None, :] - means) ** 2).sum(-1)
            log_n = -0.5 * sq / var[:, None] - 0.5 * d * torch.log(2 * math.pi * var[:, None])
        else:
            log_n = -0.5 * ((x[:, None, :] - means) ** 2 / var).sum(-1) - 0.5 * torch.log(2 * math.pi * var).sum(-1)
        if self.equal_weights:
            return log_n - math.log(self.num_components)
        return log_n + self.weights.log().to(log_n)

    def posterior(self, x: torch.Tensor, alpha: torch.Tensor | None = None,
                  sigma: torch.Tensor | None = None) -> torch.Tensor:
        """p(component k | x_t), shape (N, K)."""
        return torch.softmax(self.component_log_probs(x, alpha, sigma), dim=1)

    def log_prob(self, x: torch.Tensor, alpha: torch.Tensor | None = None,
                 sigma: torch.Tensor | None = None) -> torch.Tensor:
        return torch.logsumexp(self.component_log_probs(x, alpha, sigma), dim=1)

    def score(self, x: torch.Tensor, alpha: torch.Tensor | None = None,
              sigma: torch.Tensor | None = None) -> torch.Tensor:
        """grad_x log density (N, d): posterior-weighted (alpha mu_k - x) / var_{t,k}."""
        alpha, sigma = _clean_time(x, alpha, sigma)
        w = self.posterior(x, alpha, sigma)
        means, var = self.noised(alpha, sigma)
        if self.var is not None:
            return ((w[:, :, None] * (means - x[:, None, :])).sum(1)) / var[:, None]
        return (w[:, :, None] * (means - x[:, None, :]) / var).sum(1)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples (n, d) and their component labels (n,): labels first, then the Gaussian noise."""
        if self.equal_weights:
            labels = torch.randint(0, self.num_components, (n,), generator=generator)
        else:
            labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator)
        if self.var is not None:
            return self.means[labels] + math.sqrt(self.var) * noise, labels
        return self.means[labels] + self._stds[labels] * noise, labels


__all__ = ["Mixture"]
