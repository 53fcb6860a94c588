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


def _draw_with_bad_rows(task, finite: int, bad: int, value: float = float("nan")) -> torch.Tensor:
    """``finite`` true target rows, then ``bad`` rows holding ``value`` in one coordinate."""
    good = task.target.sample(finite, torch.Generator().manual_seed(4))[0]
    rows = torch.zeros(bad, good.shape[1])
    rows[:, 0] = value
    return torch.cat([good, rows])


def test_sample_metrics_score_the_finite_rows_up_to_one_percent(gmm_task):
    ref = gmm_task.fresh_target(2000, "validation")
    x = _draw_with_bad_rows(gmm_task, 995, 5)  # 5 of 1000 rows NaN: 0.5 %
    out = metrics.sample_metrics(x, ref, gmm_task)
    clean = metrics.sample_metrics(x[:995], ref, gmm_task)
    # guards the count: the fraction of rows with any non-finite entry, exactly
    assert out["nonfinite_fraction"] == 0.005 and out["failed"] == 0.0
    # guards "computed on the finite rows": every metric equals the one of the finite rows alone
    assert {k: out[k] for k in metrics.SAMPLE_METRIC_KEYS} == {k: clean[k] for k in metrics.SAMPLE_METRIC_KEYS}
    # guards the reference reading: true samples score their own mean log q
    assert out["mean_log_q"] == pytest.approx(metrics.reference_metrics(ref, gmm_task)["mean_log_q"], abs=0.1)
    # guards the boundary: exactly 1 % (10 of 1000, here inf rows) is still scored, not failed
    edge = metrics.sample_metrics(_draw_with_bad_rows(gmm_task, 990, 10, float("inf")), ref, gmm_task)
    assert edge["nonfinite_fraction"] == 0.01 and edge["failed"] == 0.0 and math.isfinite(edge["energy_distance"])


def test_sample_metrics_mark_a_run_failed_above_one_percent(gmm_task):
    ref = gmm_task.fresh_target(2000, "validation")
    out = metrics.sample_metrics(_draw_with_bad_rows(gmm_task, 980, 20), ref, gmm_task)  # 2 %
    # guards "never silently cleaned": above 1 % the run is failed and no metric is a number
    assert out["failed"] == 1.0 and out["nonfinite_fraction"] == 0.02
    assert all(math.isnan(out[k]) for k in metrics.SAMPLE_METRIC_KEYS)
    # guards the row shape: a failed row has the same keys as a scored one (tables and CSV stay rectangular)
    assert set(out) == set(metrics.sample_metrics(ref[:100], ref, gmm_task))
    # guards -inf and all-non-finite draws: failed, fraction 1.0
    allbad = metrics.sample_metrics(torch.full((50, 2), -math.inf), ref, gmm_task)
    assert allbad["failed"] == 1.0 and allbad["nonfinite_fraction"] == 1.0
    with pytest.raises(ValueError, match="0 rows"):  # guards an empty draw: an error, not a division by zero
        metrics.sample_metrics(ref[:0], ref, gmm_task)


def test_sample_metrics_of_a_finite_draw_are_unchanged(gmm_task):
    ref = gmm_task.fresh_target(2000, "validation")
    x = gmm_task.target.sample(500, torch.Generator().manual_seed(5))[0]
    out = metrics.sample_metrics(x, ref, gmm_task)
    # guards bit-for-bit values of a finite draw (the committed tables): the same functions on the same rows
    assert out["energy_distance"] == metrics.energy_distance(x, ref)
    assert out["sliced_w2"] == metrics.sliced_wasserstein2(x, ref)
    assert out["mode_balance_error"] == metrics.mode_balance_error(x, gmm_task)
    assert out["mean_log_q"] == gmm_task.log_q(x).mean().item()
    assert out["nonfinite_fraction"] == 0.0 and out["failed"] == 0.0


def test_failed_rows_print_as_failed_in_the_tables(gmm_task):
    # The accounting end to end: a failed row of sample_metrics reaches the `tgdp-study gmm` table and the study
    # report as "failed", never as a number or a bare nan (study/programs/gmm.py, study/report.py).
    from study import report
    from study.programs import gmm

    ref = gmm_task.fresh_target(2000, "validation")
    bad = {"n": 10, "method": "tgdp", **metrics.sample_metrics(_draw_with_bad_rows(gmm_task, 980, 20), ref, gmm_task)}
    good = {"n": 10, "method": "vanilla", **metrics.sample_metrics(ref[:500], ref, gmm_task)}
    table = gmm.markdown_table([bad, good])
    assert "| 10 | tgdp | failed | failed | failed | failed | failed |" in table
    assert "n=10 tgdp: 2.00 % of sample rows non-finite (failed: over 1 %)" in table and "nan" not in table
    md = report._table_md([bad, good], ["method", "n", "energy_distance", "nonfinite_fraction", "failed"])
    assert "| tgdp | 10 | failed | 0.02 | 1 |" in md and "nan" not in md
