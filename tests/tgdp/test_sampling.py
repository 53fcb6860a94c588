"""Samplers driven by exact GMM scores must reproduce the target (and the guidance sign must matter).

Threshold reasoning: the energy distance between two *independent* N-sample draws of the same law is
not 0 but ~c/N (the V-statistic's finite-sample bias plus noise; ~7e-4 at N = 4000 here). A correct
sampler's samples are just another such draw, so its distance to a true draw should be of that size.
We measure the reference distance between two true draws and require the sampler's to be below
3x it plus a small epsilon (1e-3, for solver discretisation error and the reference's own spread);
a wrong sampler (e.g. flipped guidance) sits at ~0.2-0.5, orders of magnitude above.
"""

from __future__ import annotations

import pytest
import torch

from tgdp import metrics
from tgdp.sampling import ddpm_ancestral, dpm_solver_2, guided_eps

N = 4000


@pytest.fixture(scope="module")
def draws(gmm_task):
    g = torch.Generator().manual_seed(123)
    ref = gmm_task.target.sample(N, g)[0]
    other = gmm_task.target.sample(N, g)[0]
    noise = torch.randn(N, 2, generator=g)
    return {"ref": ref, "noise": noise, "tol": 3 * metrics.energy_distance(ref, other) + 1e-3}


def _check_target(x, task, draws):
    ed = metrics.energy_distance(x, draws["ref"])
    # guards that the samples follow q (distance of the size of two independent true draws)
    assert ed < draws["tol"], (ed, draws["tol"])
    # guards both modes being hit in equal proportion (|0.5 - frac| ~ 0.008 at 1 sd for N = 4000)
    assert metrics.mode_balance_error(x, task) < 0.03
    # guards against collapse or blur: per-coordinate spread of the true target (var 0.1 + 0.25 = 0.35)
    assert torch.allclose(x.var(0), draws["ref"].var(0), rtol=0.1)


def test_dpm_solver_2_with_exact_target_score_reproduces_target(gmm_task, draws):
    x = dpm_solver_2(gmm_task.exact_eps("target"), gmm_task.schedule, draws["noise"], steps=25)
    _check_target(x, gmm_task, draws)


def test_ddpm_ancestral_with_exact_target_score_reproduces_target(gmm_task, draws):
    g = torch.Generator().manual_seed(9)
    x = ddpm_ancestral(gmm_task.exact_eps("target"), gmm_task.schedule, draws["noise"], steps=200, generator=g)
    _check_target(x, gmm_task, draws)


def test_source_eps_plus_exact_guidance_reproduces_target(gmm_task, draws):
    # The theorem: eps_q = eps_p - sigma_t grad log h*; with scale 1 it is the target sampler.
    eps = guided_eps(gmm_task.exact_eps("source"), gmm_task.grad_log_h_star, gmm_task.schedule, scale=1.0)
    x = dpm_solver_2(eps, gmm_task.schedule, draws["noise"], steps=25)
    _check_target(x, gmm_task, draws)
    t = torch.full((N,), 0.3)
    # guards the wrapper's algebra pointwise: guided source eps == exact target eps
    torch.testing.assert_close(eps(draws["noise"], t), gmm_task.exact_eps("target")(draws["noise"], t),
                               rtol=1e-4, atol=1e-4)


def test_exact_guidance_cut_off_above_t_half_still_reproduces_target(gmm_task, draws):
    # h* -> 1 as t -> 1, so on this testbed the guidance above t = 0.5 (alpha_t <= 0.28) carries almost
    # nothing: dropping it (the GMM experiment's guidance_t_max) must keep the exact sampler exact
    eps = guided_eps(gmm_task.exact_eps("source"), gmm_task.grad_log_h_star, gmm_task.schedule, 1.0, t_max=0.5)
    _check_target(dpm_solver_2(eps, gmm_task.schedule, draws["noise"], steps=25), gmm_task, draws)
    # guards that the cut-off is real: cut at t = 0.05, the samples stay far from q
    early = guided_eps(gmm_task.exact_eps("source"), gmm_task.grad_log_h_star, gmm_task.schedule, 1.0, t_max=0.05)
    assert metrics.energy_distance(dpm_solver_2(early, gmm_task.schedule, draws["noise"], steps=25),
                                   draws["ref"]) > 20 * draws["tol"]


def test_guidance_cut_off_is_the_plain_eps_above_t_max_and_skips_the_guidance_net(gmm_task):
    calls = []

    def grad(x, t):
        calls.append(float(t[0]))
        return gmm_task.grad_log_h_star(x, t)

    eps = guided_eps(gmm_task.exact_eps("source"), grad, gmm_task.schedule, 1.0, t_max=0.5)
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(2))
    late, early = torch.full((16,), 0.7), torch.full((16,), 0.3)
    torch.testing.assert_close(eps(x, late), gmm_task.exact_eps("source")(x, late))
    torch.testing.assert_close(eps(x, early), gmm_task.exact_eps("target")(x, early), rtol=1e-4, atol=1e-4)
    assert calls == [pytest.approx(0.3)]  # the guidance net is not evaluated where it is cut off
    mixed = torch.cat([late[:8], early[8:]])  # per-sample times: each row follows its own t
    torch.testing.assert_close(eps(x, mixed)[:8], gmm_task.exact_eps("source")(x[:8], late[:8]))


def test_flipped_guidance_sign_does_not_reproduce_target(gmm_task, draws):
    eps = guided_eps(gmm_task.exact_eps("source"), gmm_task.grad_log_h_star, gmm_task.schedule, scale=-1.0)
    x = dpm_solver_2(eps, gmm_task.schedule, draws["noise"], steps=25)
    # guards the sign: the public code's flipped guidance must be detectably wrong (>> sampler tolerance)
    assert metrics.energy_distance(x, draws["ref"]) > 20 * draws["tol"]
    src = dpm_solver_2(gmm_task.exact_eps("source"), gmm_task.schedule, draws["noise"], steps=25)
    # guards that unguided source sampling is also far from the target (the test can tell p from q)
    assert metrics.energy_distance(src, draws["ref"]) > 20 * draws["tol"]


def test_one_guided_step_moves_samples_toward_target(gmm_task):
    # From source samples noised to t = 0.3, one DDPM step with eps_p - sigma grad log h* must raise
    # the mean target log-density of the denoised estimate relative to the unguided step.
    g = torch.Generator().manual_seed(4)
    x0 = gmm_task.source.sample(2000, g)[0]
    t = torch.full((2000,), 0.3)
    a, s = gmm_task.schedule.alpha(t)[:, None], gmm_task.schedule.sigma(t)[:, None]
    xt = a * x0 + s * torch.randn(x0.shape, generator=g)
    plain = gmm_task.exact_eps("source")
    guided = guided_eps(plain, gmm_task.grad_log_h_star, gmm_task.schedule, scale=1.0)
    x0_plain = (xt - s * plain(xt, t)) / a
    x0_guided = (xt - s * guided(xt, t)) / a
    # guards the sign and sigma factor of guided_eps: guidance must move toward q, not away
    assert gmm_task.log_q(x0_guided).mean() > gmm_task.log_q(x0_plain).mean() + 0.5
    # guards that the step is a guidance step (source log-density decreases as it moves to q)
    assert gmm_task.log_p(x0_guided).mean() < gmm_task.log_p(x0_plain).mean()


def test_samplers_are_pure_functions_of_their_inputs(gmm_task):
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    eps = gmm_task.exact_eps("target")
    # guards determinism of DPM-Solver-2 (same noise, same output) used by resume and cross-method comparison
    assert torch.equal(dpm_solver_2(eps, gmm_task.schedule, noise, 5), dpm_solver_2(eps, gmm_task.schedule, noise, 5))
    a = ddpm_ancestral(eps, gmm_task.schedule, noise, 10, generator=torch.Generator().manual_seed(1))
    b = ddpm_ancestral(eps, gmm_task.schedule, noise, 10, generator=torch.Generator().manual_seed(1))
    # guards that DDPM's only randomness is its generator
    assert torch.equal(a, b)
    # guards that the inputs are not modified in place
    assert torch.equal(noise, torch.randn(64, 2, generator=torch.Generator().manual_seed(0)))


class _Zero(torch.nn.Module):
    def forward(self, x, t, y=None):
        return torch.zeros_like(x)


def test_gaussian_skip_alone_is_the_exact_eps_of_unit_gaussian_data():
    # VP keeps N(0, I) data at N(0, I) for every t, so E[eps | x_t] = sigma_t x_t: with an untrained
    # (zero) residual the skip already samples unit-variance data instead of blowing up
    from tgdp.models import GaussianSkip
    from tgdp.schedules import VPSchedule

    sch = VPSchedule()
    model = GaussianSkip(_Zero(), sch.sigma)
    x = torch.randn(5, 3)
    t = torch.full((5,), 0.4)
    torch.testing.assert_close(model(x, t), sch.sigma(t)[:, None] * x)
    out = dpm_solver_2(lambda x, t: model(x, t), sch, torch.randn(20000, 3, generator=torch.Generator().manual_seed(0)))
    assert abs(out.std().item() - 1.0) < 0.03 and abs(out.mean().item()) < 0.03, (out.std(), out.mean())


def test_train_score_gives_the_gaussian_skip_its_own_schedule():
    # the skip's sigma_t must be the training schedule's: with the default one baked in, a non-default beta
    # range would train and sample a residual around the wrong Gaussian eps
    from tgdp import stages
    from tgdp.config import ScoreConfig
    from tgdp.reporter import MemoryReporter
    from tgdp.schedules import VPSchedule

    sch = VPSchedule(beta_min=0.5, beta_max=8.0)
    cfg = ScoreConfig(width=8, depth=1, steps=1, batch_size=4, gaussian_skip=True)
    model = stages.train_score(cfg, torch.randn(16, 2), None, sch, torch.device("cpu"), MemoryReporter())
    t = torch.full((3,), 0.6)
    torch.testing.assert_close(model.sigma(t), sch.sigma(t))
    assert not torch.allclose(VPSchedule().sigma(t), sch.sigma(t))  # the check can tell the two apart


# --- draws: the rank-chunked sampler and the methods' eps-functions ------------------------------------------

class _Affine(torch.nn.Module):
    """A 'score net' eps = 0.3 x + 0.1 t (+ the label's first coordinate): cheap, deterministic, label-aware."""

    def forward(self, x, t, y=None):
        out = 0.3 * x + 0.1 * t[:, None]
        return out if y is None else out + y[:, :1]


def test_dpm2_draw_does_not_depend_on_the_batch_size_and_labels_follow_their_samples():
    from tgdp import sampling
    from tgdp.config import SampleConfig
    from tgdp.schedules import VPSchedule

    sch, cpu = VPSchedule(), torch.device("cpu")
    labels = torch.eye(2)[torch.arange(10) % 2]
    whole = sampling.model_samples(SampleConfig(num_samples=10, steps=3, batch_size=10), _Affine(), sch, cpu, (2,),
                                   labels)
    split = sampling.model_samples(SampleConfig(num_samples=10, steps=3, batch_size=3), _Affine(), sch, cpu, (2,),
                                   labels)
    # guards that a sample is a function of its index only (initial noise from the seed, its own label):
    # the batching of the draw must not change it (dpm2 is deterministic)
    torch.testing.assert_close(whole, split, rtol=0, atol=1e-6)
    # guards that the labels reach their own rows (even and odd rows got different labels)
    assert not torch.allclose(whole[0::2].mean(0), whole[1::2].mean(0), atol=1e-3)


def test_oracle_guidance_eps_is_cut_off_above_t_max_like_the_learned_guidance(gmm_task):
    from tgdp import sampling

    src = _Affine()
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    oracle = sampling.oracle_guidance_eps(src, gmm_task.grad_log_h_star, gmm_task.schedule, t_max=0.5)
    hi, lo = torch.full((6,), 0.7), torch.full((6,), 0.3)
    # guards the t_max the oracle shares with tgdp_eps: above it the plain source eps ...
    torch.testing.assert_close(oracle(x, hi), src(x, hi))
    # ... and below it eps - sigma_t grad log h* (scale 1)
    expected = src(x, lo) - gmm_task.schedule.sigma(lo)[:, None] * gmm_task.grad_log_h_star(x, lo)
    torch.testing.assert_close(oracle(x, lo), expected)


def test_label_draw_follows_the_target_label_distribution_and_is_none_without_labels():
    from tgdp import sampling

    y = torch.eye(3)[torch.tensor([0, 0, 0, 1])]  # labels 0 (3/4) and 1 (1/4), never 2
    drawn = sampling.label_draw({"target_y": y}, 4000, seed=0)
    freq = drawn.mean(0)
    # guards that conditional samples use the target's empirical label frequencies (sd of freq ~ 0.007)
    assert abs(freq[0] - 0.75) < 0.03 and freq[2] == 0, freq
    # guards that the draw is a function of the seed alone
    assert torch.equal(drawn, sampling.label_draw({"target_y": y}, 4000, seed=0))
    assert sampling.label_draw({"target_y": None}, 5, seed=0) is None
