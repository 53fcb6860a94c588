"""tgdp/metrics.py against hand computations and known limits."""

from __future__ import annotations

import math

import pytest
import torch

from tgdp import metrics


def test_energy_distance_zero_for_identical_and_positive_for_shifted():
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    # guards the V-statistic form: exactly 0 for identical sets
    assert metrics.energy_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    # guards sensitivity: a shift by 1 gives a clearly positive distance
    assert metrics.energy_distance(x, x + torch.tensor([1.0, 0.0])) > 0.3


def test_energy_distance_matches_closed_form_in_1d():
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[3.0]])
    # By hand: E|X-Y| = (3 + 2) / 2 = 2.5, E|X-X'| = (0 + 1 + 1 + 0) / 4 = 0.5, E|Y-Y'| = 0
    # -> 2 * 2.5 - 0.5 - 0 = 4.5. guards the formula and the V-statistic (diagonal included)
    assert metrics.energy_distance(x, y) == pytest.approx(4.5)
    # guards chunking: the chunked sum equals the unchunked one
    big = torch.randn(300, 3, generator=torch.Generator().manual_seed(1))
    assert metrics.energy_distance(big, big + 0.2, chunk=7) == pytest.approx(metrics.energy_distance(big, big + 0.2))


def test_sliced_w2_of_a_shifted_sample():
    g = torch.Generator().manual_seed(2)
    x1 = torch.randn(2000, 1, generator=g)
    # guards 1-D quantile matching: W2 of a sample and its shift by 0.7 is exactly 0.7
    assert metrics.sliced_wasserstein2(x1, x1 + 0.7) == pytest.approx(0.7, rel=1e-6)
    x = torch.randn(2000, 2, generator=g)
    v = torch.tensor([0.6, -0.8])  # |v| = 1
    # In d dims the projected shift is theta . v, and E_theta (theta . v)^2 = |v|^2 / d, so sliced W2 of a
    # shift by v is |v| / sqrt(d) (not |v|). guards the sqrt-of-mean-over-directions definition
    assert metrics.sliced_wasserstein2(x, x + v, projections=2000) == pytest.approx(1 / math.sqrt(2), rel=0.03)
    y = torch.randn(3000, 2, generator=g)
    # guards the unequal-size quantile matching: two true N(0, I) samples are close
    assert metrics.sliced_wasserstein2(x, y) < 0.1


def test_mode_balance_error(gmm_task):
    g = torch.Generator().manual_seed(3)
    collapsed = gmm_task.target.means[0] + 0.1 * torch.randn(1000, 2, generator=g)
    # guards collapse detection: every sample in one of two modes -> TV 0.5
    assert metrics.mode_balance_error(collapsed, gmm_task) == pytest.approx(0.5)
    # guards balance: true target samples -> ~0
    assert metrics.mode_balance_error(gmm_task.target.sample(4000, g)[0], gmm_task) < 0.03


def test_log_ratio_and_guidance_rmse_are_zero_for_the_exact_fields(gmm_task):
    # guards that the error metrics compare against the exact fields (0 error for the oracle)
    assert metrics.log_ratio_rmse(gmm_task.log_ratio, gmm_task) < 1e-5
    assert metrics.guidance_grad_rmse(gmm_task.grad_log_h_star, gmm_task) < 1e-5
    flat = metrics.guidance_grad_rmse(lambda x, t: torch.zeros_like(x), gmm_task)
    # guards the metric's scale: a flat h has a large error (~4 on this mixture), the yardstick of the guidance test
    assert 3.0 < flat < 5.0


def test_sample_metrics_drop_non_finite_rows(gmm_task):
    ref = gmm_task.fresh_target(2000, "validation")
    bad = torch.cat([ref[:1000], torch.full((5, 2), float("nan"))])
    out = metrics.sample_metrics(bad, ref, gmm_task)
    # guards that a few diverged samples do not turn every metric into NaN
    assert all(math.isfinite(v) for v in out.values())
    # guards the reference reading: true samples score their own mean log q
    assert out["mean_log_q"] == pytest.approx(metrics.reference_metrics(ref, gmm_task)["mean_log_q"], abs=0.1)
