"""Sample-quality and ratio-estimation metrics for the Gaussian-mixture testbed.

All distances compare generated samples with *fresh* true target samples (a validation draw for
selection, a test draw for reporting). Density-based scores (mean q, mean log q) are reported
together with the same score of true samples, because a collapsed sampler can score high on density
alone; mode balance catches collapse directly.
"""

from __future__ import annotations

import math

import torch

from tgdp.data.gmm import GMMTask


def energy_distance(x: torch.Tensor, y: torch.Tensor, chunk: int = 2048) -> float:
    """Energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| (Euclidean norm; V-statistic), >= 0, 0 iff equal laws."""

    def mean_dist(a: torch.Tensor, b: torch.Tensor) -> float:
        total = 0.0
        for i in range(0, a.shape[0], chunk):
            total += torch.cdist(a[i:i + chunk].double(), b.double()).sum().item()
        return total / (a.shape[0] * b.shape[0])

    x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    return 2.0 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)


def sliced_wasserstein2(x: torch.Tensor, y: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced W2: sqrt of the mean over random unit directions of the 1-D squared W2 (quantile matching)."""
    x, y = x.reshape(x.shape[0], -1).double(), y.reshape(y.shape[0], -1).double()
    dirs = torch.randn(x.shape[1], projections, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    dirs /= dirs.norm(dim=0, keepdim=True)
    px, py = torch.sort(x @ dirs, dim=0).values, torch.sort(y @ dirs, dim=0).values
    k = min(px.shape[0], py.shape[0])
    qs = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    ix = (qs * px.shape[0]).long().clamp_max(px.shape[0] - 1)
    iy = (qs * py.shape[0]).long().clamp_max(py.shape[0] - 1)
    return math.sqrt(((px[ix] - py[iy]) ** 2).mean().item())


def mode_fractions(x: torch.Tensor, task: GMMTask) -> torch.Tensor:
    """Share of the samples x (N, d) assigned to each target component (K,) float64, by the exact posterior
    argmax under q (log w_k + log N_k(x)): what a sampler's mode weights are, next to ``task.target.weights``."""
    assign = task.target.component_log_probs(x).argmax(1)
    return torch.bincount(assign, minlength=task.target.num_components).double() / x.shape[0]


def mode_balance_error(x: torch.Tensor, task: GMMTask) -> float:
    """The mode-weight error: total variation 1/2 sum_k |frac_k - w_k| between the samples' share per target
    component (``mode_fractions``) and the true target weights w_k; 0 = weights reproduced, at most 1 - min_k w_k
    (all samples in the lightest mode). On equal weights (paper) the same values as the original 1/K form."""
    return 0.5 * (mode_fractions(x, task) - task.target.weights).abs().sum().item()


# A draw with more than this fraction of non-finite rows is a failed run (issue 14): scoring its finite rows
# would score a selected subset (the trajectories that did not diverge) as if it were the sampler's output.
NONFINITE_TOLERANCE = 0.01
SAMPLE_METRIC_KEYS = ("energy_distance", "sliced_w2", "mean_log_q", "mean_q", "mode_balance_error")


def finite_rows(samples: torch.Tensor) -> tuple[torch.Tensor, float, bool]:
    """(finite rows, nonfinite_fraction, failed) of a draw (num, ...): the fraction of rows with any NaN/inf
    entry, and failed = fraction > NONFINITE_TOLERANCE (a draw with no finite row has fraction 1). ValueError
    on an empty draw."""
    if samples.shape[0] == 0:
        raise ValueError("samples: 0 rows; allowed: a draw of at least one sample")
    finite = torch.isfinite(samples.reshape(samples.shape[0], -1)).all(1)
    fraction = int((~finite).sum()) / finite.numel()  # exact: 10 of 1000 rows is 0.01, at the tolerance
    return samples[finite], fraction, fraction > NONFINITE_TOLERANCE


def failed_metrics(keys: tuple[str, ...], fraction: float) -> dict[str, float]:
    """The row of a failed run: every metric of ``keys`` NaN, ``nonfinite_fraction`` and ``failed`` = 1.0."""
    return {**{k: math.nan for k in keys}, "nonfinite_fraction": fraction, "failed": 1.0}


def sample_metrics(samples: torch.Tensor, reference: torch.Tensor, task: GMMTask) -> dict[str, float]:
    """Every sample metric (SAMPLE_METRIC_KEYS) of a draw (num, dim) against a fresh true-target reference draw,
    plus ``nonfinite_fraction`` (share of rows with any NaN/inf) and ``failed`` (0.0 or 1.0).

    Non-finite rows are counted, never silently cleaned: up to NONFINITE_TOLERANCE (1 %) the metrics are
    computed on the finite rows only (a rare diverged trajectory does not void a run, and its fraction is
    reported next to them); above it the run is failed: every metric NaN and
    ``failed`` = 1.0. ``failed`` is a float, not a bool, so it survives JSON, MLflow metrics (which drop the
    NaNs, not the flag) and CSV; report tables print failed rows as "failed". A fully finite draw scores
    exactly as before this accounting (same rows, same arithmetic)."""
    samples, fraction, failed = finite_rows(samples)
    if failed:
        return failed_metrics(SAMPLE_METRIC_KEYS, fraction)
    return {
        "energy_distance": energy_distance(samples, reference),
        "sliced_w2": sliced_wasserstein2(samples, reference),
        "mean_log_q": task.log_q(samples).mean().item(),
        "mean_q": task.log_q(samples).exp().mean().item(),
        "mode_balance_error": mode_balance_error(samples, task),
        "nonfinite_fraction": fraction,
        "failed": 0.0,
    }


def reference_metrics(reference: torch.Tensor, task: GMMTask) -> dict[str, float]:
    """mean log q and mean q of true target samples: what a perfect sampler scores."""
    return {"mean_log_q": task.log_q(reference).mean().item(), "mean_q": task.log_q(reference).exp().mean().item()}


def ratio_probe_points(task: GMMTask, n: int = 4000, seed: int = 0) -> torch.Tensor:
    """Points from (p + q) / 2: where both densities matter, so errors are weighted where they count."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([task.source.sample(n // 2, g)[0], task.target.sample(n - n // 2, g)[0]])


def log_ratio_rmse(log_ratio_fn, task: GMMTask, points: torch.Tensor | None = None) -> float:
    """RMSE of a learned log r(x) = log q/p against the exact one, on (p+q)/2 points."""
    points = ratio_probe_points(task) if points is None else points
    with torch.no_grad():
        err = log_ratio_fn(points) - task.log_ratio(points)
    return err.pow(2).mean().sqrt().item()


def guidance_grad_rmse(grad_log_h_fn, task: GMMTask, times=(0.05, 0.2, 0.5), points: torch.Tensor | None = None) -> float:
    """RMSE of a learned grad log h(x_t, t) against grad log h*, at x_t noised from (p+q)/2 points,
    averaged over ``times``. Scale-free: the guidance only enters sampling through this gradient."""
    x0 = ratio_probe_points(task) if points is None else points
    g = torch.Generator().manual_seed(1)
    total = 0.0
    for t in times:
        tt = torch.full((x0.shape[0],), float(t))
        a, s = task.schedule.alpha(tt)[:, None], task.schedule.sigma(tt)[:, None]
        x_t = a * x0 + s * torch.randn(x0.shape, generator=g)
        err = grad_log_h_fn(x_t, tt) - task.grad_log_h_star(x_t, tt)
        total += err.pow(2).sum(1).mean().item()
    return math.sqrt(total / len(times))
