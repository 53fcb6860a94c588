"""tgdp/losses.py: minimisers, balancing, and the consistency term's gradient path to psi."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tgdp import losses
from tgdp.config import GMMConfig
from tgdp.data.gmm import GMMTask
from tgdp.models.mlp import GuidanceMLP


def _minimise_scalar(loss_fn) -> float:
    """argmin over a scalar z of loss_fn(z) (convex here), by L-BFGS in float64."""
    z = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([z], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(z)
        loss.backward()
        return loss

    opt.step(closure)
    return z.item()


@pytest.mark.parametrize("kind", ["kl", "mse"])
def test_ratio_losses_are_minimised_by_the_mean_target(kind):
    # For one fixed x_t, the guidance regression over a scalar log h has h = mean of the targets r(x0).
    r = torch.tensor([0.01, 0.2, 0.5, 3.0, 7.0], dtype=torch.float64)
    best = _minimise_scalar(lambda z: losses.ratio_regression(z.expand(r.numel()), r, kind).mean())
    # guards that both losses share the minimiser h* = E[r | x_t] (so "kl" changes the fit, not the answer)
    assert math.exp(best) == pytest.approx(r.mean().item(), rel=1e-3)


def test_kl_ratio_loss_is_a_bregman_divergence():
    r = torch.tensor([0.0, 0.5, 2.0, 10.0], dtype=torch.float64)
    # guards non-negativity and zero exactly at h = r (also for r = 0, where xlogy avoids NaN)
    assert (losses.ratio_regression(torch.log(r.clamp_min(1e-300)), r, "kl").abs() < 1e-12).all()
    assert (losses.ratio_regression(torch.randn(4, dtype=torch.float64), r, "kl") >= 0).all()
    # guards unknown loss names being rejected
    with pytest.raises(ValueError, match="unknown ratio loss"):
        losses.ratio_regression(torch.zeros(4), r.float(), "l1")


def test_cycle_is_minimised_at_the_time_classifier_ratio_with_bounded_gradients():
    tlr = torch.tensor([-3.0, 0.0, 8.0])
    log_h = torch.zeros(3, requires_grad=True)
    losses.cycle(log_h, tlr).sum().backward()
    # guards the minimiser (h = exp(time_log_ratio)) and that the gradient is the log error, not ~e^8
    torch.testing.assert_close(log_h.grad, -2 * tlr)
    assert torch.all(losses.cycle(tlr, tlr) == 0)


def test_balanced_logistic_averages_each_domain_separately():
    g = torch.Generator().manual_seed(0)
    logits_s, logits_t = torch.randn(10, generator=g), torch.randn(3, generator=g)
    base = losses.balanced_logistic(torch.cat([logits_s, logits_t]), torch.cat([torch.ones(10), torch.zeros(3)])).sum()
    dup = losses.balanced_logistic(torch.cat([logits_s, logits_s, logits_t]),
                                   torch.cat([torch.ones(20), torch.zeros(3)])).sum()
    # guards per-domain averaging: duplicating the source points does not change the loss
    torch.testing.assert_close(base, dup)
    by_hand = 0.5 * (F.softplus(-logits_s).mean() + F.softplus(logits_t).mean())
    # guards the value: 1/2 (mean source BCE + mean target BCE), source label 1
    torch.testing.assert_close(base, by_hand)


def test_balanced_logistic_optimum_is_log_density_ratio_without_n_over_m():
    # One shared logit for m source and n target points at the same x: the balanced optimum is
    # logit = 0 (c = 1/2, ratio 1) whatever m/n; the pooled loss gives logit = log(m/n).
    m, n = 1000, 10
    is_source = torch.cat([torch.ones(m), torch.zeros(n)]).double()
    bal = _minimise_scalar(lambda z: losses.balanced_logistic(z.expand(m + n), is_source).sum())
    pooled = _minimise_scalar(lambda z: F.binary_cross_entropy_with_logits(z.expand(m + n), is_source))
    # guards the missing n/m factor: balanced log r = -logit = 0 here
    assert abs(bal) < 1e-3
    # guards that the test can tell the pitfall apart: pooled logit = log(m / n) ~ 4.6
    assert pooled == pytest.approx(math.log(m / n), abs=1e-2)
    # guards log r = -logit (the classifier's ratio read-out, finite for any logit)
    assert losses.log_ratio_from_logits(torch.tensor([50.0, -3.0])).tolist() == [-50.0, 3.0]


def test_denoising_score_matching_sums_over_non_batch_dims():
    pred, eps = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    # guards per-sample values of shape (N,) summed over all other dims (GMM vectors and ECG sequences)
    assert losses.denoising_score_matching(pred, eps).tolist() == [12.0, 12.0]


def _consistency_setup():
    torch.manual_seed(0)
    h = GuidanceMLP((2,), width=32, depth=2)
    g = torch.Generator().manual_seed(1)
    x_t, t, eps = torch.randn(16, 2, generator=g), torch.rand(16, generator=g) * 0.9 + 0.05, torch.randn(16, 2, generator=g)
    eps_src, sigma = torch.randn(16, 2, generator=g), torch.rand(16, generator=g) + 0.1
    return h, x_t, t, eps, eps_src, sigma


def test_consistency_trains_psi_only_with_create_graph():
    h, x_t, t, eps, eps_src, sigma = _consistency_setup()
    params = list(h.parameters())
    grad = losses.grad_log_h(lambda z: h(z, t), x_t, create_graph=True)
    loss = losses.consistency(eps_src, grad, eps, sigma).mean()
    gp = torch.autograd.grad(loss, params, allow_unused=True)
    total = sum(float(p.abs().sum()) for p in gp if p is not None)
    # guards DESIGN §1: with create_graph=True the consistency term reaches psi (non-zero gradient)
    assert total > 1e-6
    grad_ng = losses.grad_log_h(lambda z: h(z, t), x_t, create_graph=False)
    loss_ng = losses.consistency(eps_src, grad_ng, eps, sigma).mean()
    # guards the public code's bug being visible: without create_graph the loss is constant in psi
    assert not loss_ng.requires_grad
    # guards that both paths compute the same value (create_graph changes only differentiability)
    torch.testing.assert_close(loss.detach(), loss_ng)


def test_grad_log_h_matches_finite_differences():
    h, x_t, t, *_ = _consistency_setup()
    h = h.double()
    x = x_t.double()
    grad = losses.grad_log_h(lambda z: h(z, t.double()), x, create_graph=False)
    e = torch.tensor([1e-6, 0.0], dtype=torch.float64)
    fd = (h(x + e, t.double()) - h(x - e, t.double())) / 2e-6
    # guards that grad_log_h differentiates w.r.t. x (not t or psi), in the right coordinate
    torch.testing.assert_close(grad[:, 0], fd, rtol=1e-5, atol=1e-7)


def test_consistency_is_zero_at_the_exact_guided_eps(gmm_task):
    # At eps_theta = exact source eps and grad log h = grad log h*, the guided eps equals the exact
    # target eps; with eps := target eps the consistency residual is 0 (the form, sign and sigma factor).
    g = torch.Generator().manual_seed(2)
    x = torch.randn(32, 2, generator=g)
    t = torch.full((32,), 0.4)
    sigma = gmm_task.schedule.sigma(t)
    res = losses.consistency(gmm_task.exact_eps("source")(x, t), gmm_task.grad_log_h_star(x, t),
                             gmm_task.exact_eps("target")(x, t), sigma)
    # guards eps_theta - sigma grad log h - eps (a flipped sign would leave 4 sigma^2 |grad log h*|^2)
    assert res.max() < 1e-8


def test_posterior_log_ratio_with_one_reference_is_that_references_log_ratio():
    x_t = torch.randn(5, 3)
    out = losses.posterior_log_ratio(x_t, torch.full((5,), 0.7), torch.full((5,), 0.5), torch.randn(1, 3),
                                     torch.tensor([1.3]))
    assert torch.allclose(out, torch.full((5,), 1.3), atol=1e-6)


def test_posterior_log_ratio_approaches_log_h_star_with_many_source_references(gmm_task):
    # h*(x_t, t) = E_{p(x_0 | x_t)}[q/p]: the self-normalised mean over source draws converges to it.
    g = torch.Generator().manual_seed(0)
    x0, _ = gmm_task.source.sample(40000, g)
    t = torch.full((400,), 0.3)
    a, s = gmm_task.schedule.alpha(t), gmm_task.schedule.sigma(t)
    probe, _ = gmm_task.source.sample(400, g)
    x_t = a[:, None] * probe + s[:, None] * torch.randn(400, 2, generator=g)
    est = losses.posterior_log_ratio(x_t, a, s, x0, gmm_task.log_ratio(x0))
    err = (est - gmm_task.log_h_star(x_t, t)).abs()
    # measured: median 0.026, max 0.075; with the kernel width off by 1.5x: median 0.094, max 0.97
    assert err.median() < 0.05 and err.max() < 0.25, (err.median(), err.max())


def test_pooled_references_estimate_h_star_where_source_points_are_few():
    # Near the target modes the source points carry importance weights r with an ESS of ~2% of m, so the
    # source-only posterior mean is noisy; pooling the n = 1000 target points (balance heuristic) fixes it.
    task = GMMTask(GMMConfig(m=10000, n=1000, seed=0))
    d, g = task.draw(), torch.Generator().manual_seed(0)
    t = torch.full((400,), 0.2)
    a, s = task.schedule.alpha(t), task.schedule.sigma(t)
    probe, _ = task.target.sample(400, g)
    x_t = a[:, None] * probe + s[:, None] * torch.randn(400, 2, generator=g)
    exact = task.log_h_star(x_t, t)
    source_only = losses.posterior_log_ratio(x_t, a, s, d["source_x"], task.log_ratio(d["source_x"]))
    x0 = torch.cat([d["source_x"], d["target_x"]])
    is_source = torch.arange(len(x0)) < task.cfg.m
    m, n = task.cfg.m, task.cfg.n
    weight = losses.pooled_reference_log_weights(task.log_ratio(x0), is_source, m, n, num_source_refs=m)
    pooled = losses.posterior_log_ratio(x_t, a, s, x0, task.log_ratio(x0), None, weight)
    err_source, err_pooled = (source_only - exact).abs(), (pooled - exact).abs()
    # measured: source-only median 0.149, max 1.04; pooled median 0.022, max 0.083
    assert err_source.median() > 0.1, err_source.median()
    assert err_pooled.median() < 0.05 and err_pooled.max() < 0.25, (err_pooled.median(), err_pooled.max())


def test_pooled_reference_weights_turn_the_pool_into_draws_of_p():
    # With r = 1 (one domain) every point is a draw of p: a source reference standing for m / R points gets
    # m / R times a target point's weight, and all weights sum to 1 over the m + n points they stand for.
    m, n, refs = 1000, 50, 100
    log_r = torch.zeros(refs + n)
    is_source = torch.arange(refs + n) < refs
    w = losses.pooled_reference_log_weights(log_r, is_source, m, n, refs).exp()
    assert torch.allclose(w[0] / w[-1], torch.tensor(m / refs))
    assert torch.allclose(w.sum(), torch.tensor(1.0))


def test_posterior_log_ratio_respects_the_label_mask():
    x_t = torch.zeros(2, 1)
    refs, log_r = torch.tensor([[0.0], [0.0]]), torch.tensor([0.0, 2.0])
    same = torch.tensor([[True, False], [False, True]])
    out = losses.posterior_log_ratio(x_t, torch.ones(2), torch.ones(2), refs, log_r, same)
    assert torch.allclose(out, torch.tensor([0.0, 2.0]))
