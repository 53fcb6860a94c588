"""The analytic Gaussian-mixture quantities (tgdp/data/gmm.py) and the schedules they rest on.

These are the oracles of every other test, so they are checked against independent computations:
autograd of the exact log densities, Monte-Carlo convolutions and self-normalised importance sampling.
"""

from __future__ import annotations

import math

import pytest
import torch

from tgdp.schedules import DiscreteSchedule, VPSchedule

TIMES = [0.001, 0.05, 0.2, 0.5, 1.0]


def _points(n: int = 64, seed: int = 0) -> torch.Tensor:
    """float64 points spread over both mixtures and the gap between them."""
    return 1.2 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _autograd(fn, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x).sum(), x)
    return g


# --- scores, h*, grad log h* -------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [None] + TIMES)
def test_exact_scores_are_autograd_of_exact_log_densities(gmm_task, t):
    x = _points()
    tt = None if t is None else torch.full((x.shape[0],), t, dtype=torch.float64)
    zero = torch.full((x.shape[0],), 0.0, dtype=torch.float64)  # score(x, t=0) for the t = None case
    src = gmm_task.source_score(x, zero if tt is None else tt)
    tgt = gmm_task.target_score(x, zero if tt is None else tt)
    # guards the closed-form source score (posterior-weighted (alpha mu_k - x) / var_t) against log p_t
    torch.testing.assert_close(src, _autograd(lambda z: gmm_task.log_p(z, tt), x), rtol=1e-9, atol=1e-9)
    # guards the closed-form target score against log q_t
    torch.testing.assert_close(tgt, _autograd(lambda z: gmm_task.log_q(z, tt), x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("t", TIMES)
def test_grad_log_h_star_is_score_difference_and_autograd_of_log_h_star(gmm_task, t):
    x = _points(seed=1)
    tt = torch.full((x.shape[0],), t, dtype=torch.float64)
    g = gmm_task.grad_log_h_star(x, tt)
    # guards the theorem's decomposition: grad log q_t = grad log p_t + grad log h*
    torch.testing.assert_close(g, gmm_task.target_score(x, tt) - gmm_task.source_score(x, tt))
    # guards grad log h* against an independent derivative of log h* = log q_t - log p_t
    torch.testing.assert_close(g, _autograd(lambda z: gmm_task.log_h_star(z, tt), x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("t", [0.05, 0.3, 0.8])
def test_noised_marginals_are_convolutions_of_the_clean_mixtures(gmm_task, t):
    # q_t(x_t) = E_{x0 ~ q}[N(x_t; alpha x0, sigma^2 I)], estimated by plain Monte Carlo.
    g = torch.Generator().manual_seed(5)
    x0 = gmm_task.target.sample(200_000, g)[0].double()
    a, s = (float(f(torch.tensor(t, dtype=torch.float64))) for f in (gmm_task.schedule.alpha, gmm_task.schedule.sigma))
    xt = torch.tensor([[0.4, -0.4], [0.0, 0.0], [-0.6, 0.2]], dtype=torch.float64) * a
    dens = torch.exp(-((xt[:, None] - a * x0[None]) ** 2).sum(-1) / (2 * s**2)) / (2 * math.pi * s**2)
    mc, se = dens.mean(1), dens.std(1) / math.sqrt(x0.shape[0])
    exact = gmm_task.log_q(xt, torch.full((3,), t, dtype=torch.float64)).exp()
    # guards the noised-mixture formula (means alpha mu, variance alpha^2 s^2 + sigma^2) to 5 standard errors
    assert ((mc - exact).abs() < 5 * se + 1e-12).all(), (mc, exact, se)


@pytest.mark.parametrize("t", [0.1, 0.3, 0.6])
def test_h_star_is_posterior_expectation_of_clean_ratio(gmm_task, t):
    """h*(x_t, t) = E_{p(x0|x_t)}[q(x0)/p(x0)] by self-normalised importance sampling with proposal p."""
    g = torch.Generator().manual_seed(7)
    x0 = gmm_task.source.sample(200_000, g)[0].double()
    r = gmm_task.log_ratio(x0).exp()
    tt = torch.tensor(t, dtype=torch.float64)
    a, s = gmm_task.schedule.alpha(tt), gmm_task.schedule.sigma(tt)
    xt = torch.tensor([[0.3, -0.3], [0.1, 0.1], [-0.5, 0.4], [0.5, 0.5]], dtype=torch.float64)
    exact = gmm_task.log_h_star(xt, torch.full((4,), t, dtype=torch.float64)).exp()
    for i in range(xt.shape[0]):
        logw = -((xt[i] - a * x0) ** 2).sum(1) / (2 * s**2)  # p(x_t | x0) up to a constant
        w = torch.softmax(logw, 0)
        est = (w * r).sum()
        se = torch.sqrt((w**2 * (r - est) ** 2).sum())  # delta-method standard error of the SNIS estimate
        # the check has power: the estimate is tight (< 5% relative standard error)
        assert se < 0.05 * est
        # guards h* = q_t / p_t against its definition as the posterior mean of r(x0)
        assert abs(est - exact[i]) < 5 * se, (t, xt[i], est, exact[i], se)


def test_h_star_tends_to_clean_ratio_at_small_t(gmm_task):
    x = _points(seed=2)
    # guards the t -> 0 limit: h*(x, t_min) ~ r(x) (the guidance target at small t is the classifier ratio)
    torch.testing.assert_close(gmm_task.log_h_star(x, 1e-5), gmm_task.log_ratio(x), rtol=0, atol=1e-2)


def test_ratio_has_unit_mean_under_source(gmm_task):
    g = torch.Generator().manual_seed(3)
    r = gmm_task.log_ratio(gmm_task.source.sample(400_000, g)[0].double()).exp()
    se = r.std() / math.sqrt(r.numel())
    # guards E_p[q/p] = 1 (the normalisation rule of the guidance targets relies on it), to 5 standard errors
    assert abs(r.mean() - 1.0) < 5 * se
    # ... and the Monte-Carlo check has power (r is heavy-tailed under p: se ~ 0.02 at 400k draws)
    assert se < 0.03
    # the same integral by quadrature on a fine grid: sum p(x) r(x) dA = 1 to high accuracy
    ax = torch.linspace(-4.0, 4.0, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(ax, ax)
    da = (ax[1] - ax[0]) ** 2
    integral = (gmm_task.log_p(grid).exp() * gmm_task.log_ratio(grid).exp()).sum() * da
    # guards that p and q are normalised densities and r = q / p exactly
    assert abs(integral.item() - 1.0) < 1e-6


def test_joint_ratio_matches_component_formula_and_marginalises_to_r(gmm_task):
    x = _points(seed=4)
    var = gmm_task.cfg.variance
    mu_s, mu_t = torch.tensor(gmm_task.cfg.mu_source, dtype=torch.float64), torch.tensor(gmm_task.cfg.mu_target, dtype=torch.float64)
    for k, sign in enumerate((1.0, -1.0)):
        y = torch.zeros(x.shape[0], 2)
        y[:, k] = 1.0
        by_hand = -(((x - sign * mu_t) ** 2).sum(1) - ((x - sign * mu_s) ** 2).sum(1)) / (2 * var)
        # guards the conditional version's label plumbing: label k = component k (+mu for 0, -mu for 1)
        torch.testing.assert_close(gmm_task.log_joint_ratio(x, y), by_hand, rtol=1e-6, atol=1e-6)
    # E_{p(y|x)}[q(x,y)/p(x,y)] = q(x)/p(x): the joint ratio marginalises to r
    post = torch.softmax(gmm_task.source.component_log_probs(x), 1)
    ys = torch.eye(2).expand(x.shape[0], 2, 2)
    joint = torch.stack([gmm_task.log_joint_ratio(x, ys[:, k]) for k in range(2)], 1).exp()
    # guards consistency between the joint and the marginal ratio
    torch.testing.assert_close((post * joint).sum(1).log(), gmm_task.log_ratio(x), rtol=1e-6, atol=1e-6)


def test_exact_eps_is_minus_sigma_times_score(gmm_task):
    x = _points(seed=6)
    t = torch.full((x.shape[0],), 0.3, dtype=torch.float64)
    sigma = gmm_task.schedule.sigma(t)[:, None]
    # guards the eps-parametrisation s = -eps / sigma of both exact models
    torch.testing.assert_close(gmm_task.exact_eps("target")(x, t), -sigma * gmm_task.target_score(x, t))
    torch.testing.assert_close(gmm_task.exact_eps("source")(x, t), -sigma * gmm_task.source_score(x, t))


def test_exact_eps_rejects_unknown_mixture_name(gmm_task):
    # BUG (tgdp/data/gmm.py, GMMTask.exact_eps): any name other than "target" silently returns the
    # *source* eps, so a typo ("tgt", "Target") turns an oracle-target run into source-only.
    # guards specific, early errors (STYLE 6)
    with pytest.raises(ValueError):
        gmm_task.exact_eps("tgt")


def test_draws_are_seeded_and_splits_differ(gmm_task):
    a, b = gmm_task.draw("train"), gmm_task.draw("train")
    # guards reproducibility of the training draw
    assert torch.equal(a["source_x"], b["source_x"]) and torch.equal(a["target_x"], b["target_x"])
    # guards that validation/test never reuse the training points
    assert not torch.equal(a["target_x"][:10], gmm_task.draw("validation")["target_x"][:10])
    assert not torch.equal(gmm_task.fresh_target(100, "validation"), gmm_task.fresh_target(100, "test"))
    # guards the one-hot label layout used by the conditional version
    assert a["source_y"].shape == (gmm_task.cfg.m, 2) and torch.all(a["target_y"].sum(1) == 1)


# --- schedules -----------------------------------------------------------------------------------------

def test_vp_schedule_identities():
    sch = VPSchedule()
    t = torch.linspace(sch.t_min, 1.0, 200, dtype=torch.float64)
    # guards the variance-preserving kernel: alpha^2 + sigma^2 = 1
    torch.testing.assert_close(sch.alpha(t) ** 2 + sch.sigma(t) ** 2, torch.ones_like(t))
    # guards lambda = log(alpha / sigma)
    torch.testing.assert_close(sch.lam(t), torch.log(sch.alpha(t) / sch.sigma(t)))
    # guards the closed-form inverse used by DPM-Solver's log-SNR grid
    torch.testing.assert_close(sch.t_of_lam(sch.lam(t)), t, rtol=1e-8, atol=1e-10)
    # guards monotonicity: lambda strictly decreases in t (the solver walks a monotone grid)
    assert (sch.lam(t).diff() < 0).all()
    # guards the endpoints: almost no noise at t_min, almost pure noise at t = 1
    assert sch.sigma(t[:1]).item() < 0.05 and sch.alpha(t[-1:]).item() < 0.01
    u = sch.sample_t(10_000, generator=torch.Generator().manual_seed(0), power=2.0)
    # guards the training-time range [t_min, 1] and the small-t bias of power > 1 (median u^2 = 1/4)
    assert u.min() >= sch.t_min and u.max() <= 1.0 and abs(u.median().item() - 0.25) < 0.02


def test_discrete_schedule_discretises_the_vp_schedule():
    ds = DiscreteSchedule()
    vp = ds.matching_vp()
    t = ds.times().double()
    # guards the beta correspondence beta_i = beta(t_i) / T (0.1 .. 20 for T = 1000)
    assert vp.beta_min == pytest.approx(0.1) and vp.beta_max == pytest.approx(20.0)
    # guards alpha_bar_i ~ alpha(i / T)^2 (first-order discretisation error only)
    torch.testing.assert_close(ds.alpha_bar(), vp.alpha(t) ** 2, rtol=0, atol=2e-3)
    # ... and in log space away from the first steps, where the relative error of the Riemann sum is small
    rel = (ds.alpha_bar().log() / (2 * vp.log_alpha(t)) - 1).abs()
    assert rel[50:].max() < 0.02
    # guards the returned alphas/sigmas: alpha^2 + sigma^2 = 1 on the discrete grid
    torch.testing.assert_close(ds.alphas() ** 2 + ds.sigmas() ** 2, torch.ones(ds.num_steps))
