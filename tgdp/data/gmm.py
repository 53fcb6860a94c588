"""The Gaussian-mixture testbed (DESIGN §2): everything in closed form.

Source p = 1/2 N(mu_S, s^2 I) + 1/2 N(-mu_S, s^2 I), target q likewise with mu_T. Under the forward
kernel x_t = alpha_t x_0 + sigma_t eps a mixture stays a mixture: means alpha_t mu, variance
alpha_t^2 s^2 + sigma_t^2. Hence exact noised densities, scores, h* = q_t / p_t and grad log h*.
Component index = class label of the conditional version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tgdp.config import GMMConfig
from tgdp.schedules import VPSchedule


@dataclass(frozen=True)
class Mixture:
    """Equal-weight isotropic Gaussian mixture with component means (K, d) and variance ``var``."""

    means: torch.Tensor
    var: float

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def noised(self, alpha: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample component means (N, K, d) and variances (N,) of the marginal at time t."""
        means = alpha[:, None, None] * self.means[None].to(alpha.dtype)
        var = alpha**2 * self.var + sigma**2
        return means, var

    def component_log_probs(self, x: torch.Tensor, alpha: torch.Tensor | None = None,
                            sigma: torch.Tensor | None = None) -> torch.Tensor:
        """log(w_k N(x; alpha mu_k, var_t I)), shape (N, K). alpha/sigma default to t = 0."""
        n, d = x.shape
        if alpha is None:
            alpha = torch.ones(n, dtype=x.dtype, device=x.device)
            sigma = torch.zeros(n, dtype=x.dtype, device=x.device)
        means, var = self.noised(alpha, sigma)
        sq = ((x[:, None, :] - means.to(x.device)) ** 2).sum(-1)
        return -0.5 * sq / var[:, None] - 0.5 * d * torch.log(2 * math.pi * var[:, None]) - math.log(self.num_components)

    def log_prob(self, x, alpha=None, sigma=None) -> torch.Tensor:
        return torch.logsumexp(self.component_log_probs(x, alpha, sigma), dim=1)

    def score(self, x, alpha=None, sigma=None) -> torch.Tensor:
        """grad_x log density: posterior-weighted (alpha mu_k - x) / var_t."""
        n = x.shape[0]
        if alpha is None:
            alpha = torch.ones(n, dtype=x.dtype, device=x.device)
            sigma = torch.zeros(n, dtype=x.dtype, device=x.device)
        w = torch.softmax(self.component_log_probs(x, alpha, sigma), dim=1)
        means, var = self.noised(alpha, sigma)
        return ((w[:, :, None] * (means.to(x.device) - x[:, None, :])).sum(1)) / var[:, None]

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples and their component labels (balanced in expectation)."""
        labels = torch.randint(0, self.num_components, (n,), generator=generator)
        noise = torch.randn(n, self.means.shape[1], generator=generator)
        return self.means[labels] + math.sqrt(self.var) * noise, labels


class GMMTask:
    """Source and target mixtures of a ``GMMConfig`` plus the exact TGDP quantities."""

    def __init__(self, cfg: GMMConfig, schedule: VPSchedule | None = None) -> None:
        self.cfg = cfg
        self.schedule = schedule or VPSchedule()
        mu_s = torch.tensor(cfg.mu_source, dtype=torch.float32)
        mu_t = torch.tensor(cfg.mu_target, dtype=torch.float32)
        if mu_s.numel() != cfg.dim or mu_t.numel() != cfg.dim:
            raise ValueError(f"mu_source/mu_target must have dim={cfg.dim} entries")
        self.source = Mixture(torch.stack([mu_s, -mu_s]), cfg.variance)
        self.target = Mixture(torch.stack([mu_t, -mu_t]), cfg.variance)
        self.num_labels = 2

    # --- draws (seeded; train / validation / test never share a seed) -----------------------------
    def draw(self, split: str = "train") -> dict[str, torch.Tensor]:
        """m source and n target samples with one-hot labels. ``split``: train, validation or test."""
        offset = {"train": 0, "validation": 1, "test": 2}[split]
        g = torch.Generator().manual_seed(1000 * self.cfg.seed + offset)
        xs, ys = self.source.sample(self.cfg.m, g)
        xt, yt = self.target.sample(self.cfg.n, g)
        return {"source_x": xs, "source_y": one_hot(ys, 2), "target_x": xt, "target_y": one_hot(yt, 2)}

    def fresh_target(self, n: int, split: str, seed: int | None = None) -> torch.Tensor:
        """True target samples for evaluation (validation selects, test reports)."""
        offset = {"validation": 11, "test": 12}[split]
        g = torch.Generator().manual_seed(1000 * (self.cfg.seed if seed is None else seed) + offset)
        return self.target.sample(n, g)[0]

    # --- exact quantities -------------------------------------------------------------------------
    def _at(self, x: torch.Tensor, t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self.schedule.alpha(t), self.schedule.sigma(t)

    def log_p(self, x: torch.Tensor, t=None) -> torch.Tensor:
        return self.source.log_prob(x) if t is None else self.source.log_prob(x, *self._at(x, t))

    def log_q(self, x: torch.Tensor, t=None) -> torch.Tensor:
        return self.target.log_prob(x) if t is None else self.target.log_prob(x, *self._at(x, t))

    def source_score(self, x, t) -> torch.Tensor:
        return self.source.score(x, *self._at(x, t))

    def target_score(self, x, t) -> torch.Tensor:
        return self.target.score(x, *self._at(x, t))

    def log_ratio(self, x: torch.Tensor) -> torch.Tensor:
        """log r(x_0) = log q(x_0) - log p(x_0)."""
        return self.log_q(x) - self.log_p(x)

    def log_h_star(self, x, t) -> torch.Tensor:
        """log h*(x_t, t) = log q_t(x_t) - log p_t(x_t)."""
        return self.log_q(x, t) - self.log_p(x, t)

    def grad_log_h_star(self, x, t) -> torch.Tensor:
        return self.target_score(x, t) - self.source_score(x, t)

    def exact_eps(self, mixture: str):
        """eps-function of an exact score: eps = -sigma_t * score (``source`` or ``target``)."""
        scores = {"source": self.source_score, "target": self.target_score}
        if mixture not in scores:
            raise ValueError(f"unknown mixture {mixture!r}; expected 'source' or 'target'")
        score = scores[mixture]

        def eps(x, t):
            return -self.schedule.sigma(t)[:, None] * score(x, t)

        return eps

    # joint (labelled) versions for the conditional TGDP: component k of source vs target
    def log_joint_ratio(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log q(x, y) - log p(x, y) with y one-hot component labels."""
        k = y.argmax(1)
        lq = self.target.component_log_probs(x).gather(1, k[:, None]).squeeze(1)
        lp = self.source.component_log_probs(x).gather(1, k[:, None]).squeeze(1)
        return lq - lp


def one_hot(labels: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, k).float()
