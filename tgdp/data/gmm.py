"""The Gaussian-mixture task (DESIGN §2): a source p and a target q, everything in closed form.

p and q are mixtures sum_k w_k N(mu_k, diag(s_k^2)) from the suite ``tgdp.data.testbeds.TESTBEDS``, chosen by
``GMMConfig.testbed`` (``paper``, the default, is the original two-mode testbed parametrised by GMMConfig's
dim/variance/mu_source/mu_target). A mixture stays a mixture under the forward process
(``tgdp.data.mixture``), so log p_t, log q_t, their scores, log r = log q - log p, h* = q_t / p_t and
grad log h* are exact for every instance. Component index = class label of the conditional version
(source and target share K; label k pairs component k of both).
"""

from __future__ import annotations

import torch

from tgdp.config import GMMConfig
from tgdp.data.mixture import Mixture
from tgdp.data.testbeds import Testbed, testbed_of
from tgdp.schedules import VPSchedule


class GMMTask:
    """Source and target mixtures of a ``GMMConfig`` plus the exact TGDP quantities."""

    def __init__(self, cfg: GMMConfig, schedule: VPSchedule | None = None) -> None:
        self.cfg = cfg
        self.schedule = schedule or VPSchedule()
        self.testbed: Testbed = testbed_of(cfg)
        self.source = Mixture.from_spec(self.testbed.source)
        self.target = Mixture.from_spec(self.testbed.target)
        self.num_labels = self.testbed.num_components
        self.dim = self.testbed.dim  # data dimension d (cfg.dim only parametrises ``paper``)

    # --- draws (seeded; train / validation / test never share a seed) -----------------------------
    def draw(self, split: str = "train") -> dict[str, torch.Tensor]:
        """m source and n target samples with one-hot labels (N, K). ``split``: train, validation or test."""
        offset = {"train": 0, "validation": 1, "test": 2}[split]
        g = torch.Generator().manual_seed(1000 * self.cfg.seed + offset)
        xs, ys = self.source.sample(self.cfg.m, g)
        xt, yt = self.target.sample(self.cfg.n, g)
        k = self.num_labels
        return {"source_x": xs, "source_y": one_hot(ys, k), "target_x": xt, "target_y": one_hot(yt, k)}

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
        """log q(x, y) - log p(x, y) with y one-hot component labels (N, K)."""
        k = y.argmax(1)
        lq = self.target.component_log_probs(x).gather(1, k[:, None]).squeeze(1)
        lp = self.source.component_log_probs(x).gather(1, k[:, None]).squeeze(1)
        return lq - lp


def one_hot(labels: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, k).float()


__all__ = ["GMMTask", "Mixture", "one_hot"]
