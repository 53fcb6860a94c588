"""The Gaussian-mixture testbed suite (DESIGN §2, issue 14): plain numbers, no torch.

Each instance is a source p and a target q, each sum_k w_k N(mu_k, diag(s_k^2)) in R^d. The maths of one
mixture (noised densities, scores, sampling) is ``tgdp.data.mixture.Mixture``; the task built on a pair
(exact log r, h*, grad log h*, exact eps, seeded draws) is ``tgdp.data.gmm.GMMTask``. This module is
torch-free so that ``GMMConfig`` can check a testbed name while a spec is validated (no torch import).

**Labels.** The conditional version's label is the component index, so source and target must have the
same number of components K, and component k of the source is paired with component k of the target
(``log q(x, y=k) - log p(x, y=k)``). A target mode the source lacks is written as a source component of
small weight at that place (``partial``): the label space stays shared and p(x, y) > 0 everywhere.
``Testbed`` refuses unequal K or d.

The suite (sigma^2 = per-coordinate variance of every component, s = sqrt(sigma^2) = 0.316; "shift" = distance
between paired source and target modes; log r = log q - log p at a target mode's mean):

| name      | d | K | source means (weights)                   | target means (weights)                      | log r  |
|-----------|---|---|------------------------------------------|---------------------------------------------|--------|
| `paper`   | 2 | 2 | +-(0.5, 0.5) (1/2, 1/2)                  | +-(0.5, -0.5) (1/2, 1/2)                    | 4.3    |
| `asym`    | 2 | 2 | +-(0.5, 0.5) (1/2, 1/2)                  | +-(0.5, -0.5) (0.75, 0.25)                  | 4.7 3.6|
| `d8`      | 8 | 2 | +-0.5 * (1,1,1,1,1,1,1,1) (1/2, 1/2)     | +-0.5 * (1,1,1,1,1,0,0,0) (1/2, 1/2)        | 3.8    |
| `partial` | 2 | 3 | (.5, .5), (-.5, -.5), (1.5, -1.5)        | (.5, -.5), (-.5, .5), (1.5, -1.5)           | 4.1 4.6|
|           |   |   |   (0.499, 0.499, 0.002)                  |   (0.4, 0.4, 0.2)                           |        |
| `near`    | 2 | 2 | +-(0.5, 0.5) (1/2, 1/2)                  | +-(0.5, 0.25) (1/2, 1/2)                    | 0.3    |

sigma^2 = 0.1 throughout (paper's). Shifts: paper / asym 1.0 (3.2 s); d8 0.87 (2.7 s), in coordinates 6-8
only: five coordinates carry no signal; partial 1.0 for modes 0-1, and a third target mode (weight 0.2)
where the source holds 0.2 % of its mass (about 20 of m = 10000 source points; r = 0.2 / 0.002 = 100 there,
inside the guidance's log-ratio clip of 8; 7.1 s from the other source modes, 4.5 s from the nearest other
target mode); near 0.25 (0.8 s; log r < 1.8 on 99 % of target points, energy distance p-to-q 0.03
against paper's 0.17).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

PAPER = "paper"
# GMMConfig fields that parametrise `paper` only; a named instance fixes its own numbers (GMMConfig refuses
# these at non-default values together with another testbed)
PAPER_FIELDS = ("dim", "variance", "mu_source", "mu_target")


@dataclass(frozen=True)
class MixtureSpec:
    """sum_k w_k N(mu_k, diag(s_k^2)) as plain numbers; ValueError naming the field on a bad one."""

    means: tuple[tuple[float, ...], ...]  # (K, d) component means mu_k
    variance: float | tuple[tuple[float, ...], ...] = 0.1  # one isotropic s^2 for every component, or (K, d)
    weights: tuple[float, ...] | None = None  # (K,) positive, summing to 1; None = equal weights 1/K

    def __post_init__(self) -> None:
        k = len(self.means)
        if k == 0 or len({len(m) for m in self.means}) != 1 or not self.means[0]:
            raise ValueError(f"means: need K >= 1 components of one dimension d >= 1; got {self.means!r}")
        if self.weights is not None and (len(self.weights) != k or min(self.weights) <= 0
                                         or abs(math.fsum(self.weights) - 1.0) > 1e-9):
            raise ValueError(f"weights: need {k} positive numbers summing to 1; got {self.weights!r}")
        var = self.variance
        flat = [var] if isinstance(var, (int, float)) else [v for row in var for v in row]
        shaped = isinstance(var, (int, float)) or (len(var) == k and all(len(r) == self.dim for r in var))
        if not shaped or not all(math.isfinite(v) and v > 0 for v in flat):
            raise ValueError(f"variance: need one number > 0 or ({k}, {self.dim}) numbers > 0; got {var!r}")

    @property
    def dim(self) -> int:
        return len(self.means[0])

    @property
    def num_components(self) -> int:
        return len(self.means)

    @property
    def shared_variance(self) -> float | None:
        """The one variance s^2 every component and coordinate shares, else None."""
        var = self.variance
        if isinstance(var, (int, float)):
            return float(var)
        values = {v for row in var for v in row}
        return float(values.pop()) if len(values) == 1 else None

    @property
    def equal_weights(self) -> bool:
        return self.weights is None or len(set(self.weights)) == 1

    def weight_list(self) -> list[float]:
        return [1.0 / self.num_components] * self.num_components if self.weights is None else list(self.weights)


@dataclass(frozen=True)
class Testbed:
    """A source/target pair with a shared label space (same K) and dimension d."""

    source: MixtureSpec
    target: MixtureSpec
    why: str  # one line: what this instance tests that the others do not

    def __post_init__(self) -> None:
        if self.source.num_components != self.target.num_components:
            raise ValueError(f"target: has {self.target.num_components} components, the source "
                             f"{self.source.num_components}; allowed: the same K (label k = component k of both; "
                             "give the source a component of small weight where it has none)")
        if self.source.dim != self.target.dim:
            raise ValueError(f"target: dimension {self.target.dim}, the source's {self.source.dim}; allowed: equal")

    @property
    def dim(self) -> int:
        return self.source.dim

    @property
    def num_components(self) -> int:
        return self.source.num_components

    @property
    def extent(self) -> float:
        """Largest |coordinate| of any component mean (plot windows)."""
        return max(abs(v) for spec in (self.source, self.target) for m in spec.means for v in m)


def symmetric(mu: tuple[float, ...], variance: float = 0.1, weights: tuple[float, ...] | None = None) -> MixtureSpec:
    """Two modes at +mu and -mu (the paper's shape), in that order: label 0 = +mu, label 1 = -mu."""
    return MixtureSpec(means=(tuple(mu), tuple(-v for v in mu)), variance=variance, weights=weights)


_SOURCE = symmetric((0.5, 0.5))  # the paper's source
_ONES8 = (0.5,) * 8

TESTBEDS: dict[str, Testbed] = {
    PAPER: Testbed(_SOURCE, symmetric((0.5, -0.5)),
                   "the paper's: two symmetric equal-weight modes, d = 2 (GMMConfig's dim/variance/mu_* set it)"),
    "asym": Testbed(_SOURCE, symmetric((0.5, -0.5), weights=(0.75, 0.25)),
                    "unequal target weights: is 0.75 / 0.25 reproduced or pulled toward the source's 1/2 / 1/2?"),
    "d8": Testbed(symmetric(_ONES8), symmetric((0.5, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0)),
                  "d = 8, shift in three coordinates: the ratio must be found among five coordinates without signal"),
    "partial": Testbed(
        MixtureSpec(means=((0.5, 0.5), (-0.5, -0.5), (1.5, -1.5)), weights=(0.499, 0.499, 0.002)),
        MixtureSpec(means=((0.5, -0.5), (-0.5, 0.5), (1.5, -1.5)), weights=(0.4, 0.4, 0.2)),
        "a target mode (20 % of q) where the source has 0.2 % of its mass: the ratio assumption strained"),
    "near": Testbed(_SOURCE, symmetric((0.5, 0.25)),
                    "a small shift (0.8 s): the source is almost right, so fine-tuning should be hard to beat"),
}


def testbed_of(cfg: Any) -> Testbed:
    """The testbed of a ``GMMConfig``: ``paper`` built from its dim/variance/mu_source/mu_target, any other
    name from TESTBEDS. ValueError when paper's means do not have ``dim`` coordinates."""
    if cfg.testbed != PAPER:
        return TESTBEDS[cfg.testbed]
    if len(cfg.mu_source) != cfg.dim or len(cfg.mu_target) != cfg.dim:
        raise ValueError(f"mu_source/mu_target must have dim={cfg.dim} entries")
    return Testbed(symmetric(cfg.mu_source, cfg.variance), symmetric(cfg.mu_target, cfg.variance), TESTBEDS[PAPER].why)


__all__ = ["PAPER", "PAPER_FIELDS", "TESTBEDS", "MixtureSpec", "Testbed", "symmetric", "testbed_of"]
