"""The Gaussian-mixture testbed suite (tgdp/data/testbeds.py, mixture.py, gmm.py): oracles for every instance.

Each named instance (paper, asym, d8, partial, near) and one test-only instance that exercises what the
suite does not (K = 3 with unequal weights on both sides, per-component diagonal variances, d = 3: the
general arithmetic path) is checked like the original testbed in test_gmm_oracles.py: exact scores against
autograd of the exact log densities, the noised marginals against Monte-Carlo convolutions, h* and
grad log h*, the t -> 0 limit, and samplers driven by the exact target eps or by oracle guidance
(exact source eps + exact grad log h*) reproducing the target, mode weights included.
"""

from __future__ import annotations

import math

import pytest
import torch

from study.experiments import get_experiment
from study.experiments.gmm import log_ratio_grid
from tgdp import metrics, stages
from tgdp.config import ClassifierConfig, GMMConfig
from tgdp.data.gmm import GMMTask
from tgdp.data.testbeds import TESTBEDS, MixtureSpec
from tgdp.data.testbeds import Testbed as Bed  # not collected as a test class
from tgdp.sampling import dpm_solver_2, guided_eps

SUITE = ("paper", "asym", "d8", "partial", "near")
GENERAL = Bed(  # test-only: unequal weights on both sides, K = 3, per-component diagonal variances, d = 3
    MixtureSpec(means=((1.0, 0.0, 0.5), (-1.0, 0.5, 0.0), (0.0, -1.0, -0.5)), weights=(0.2, 0.5, 0.3),
                variance=((0.1, 0.2, 0.05), (0.3, 0.1, 0.1), (0.15, 0.15, 0.25))),
    MixtureSpec(means=((1.0, -0.5, 0.5), (-0.5, 0.5, 0.5), (0.5, -1.0, 0.0)), weights=(0.6, 0.1, 0.3),
                variance=((0.2, 0.1, 0.1), (0.1, 0.1, 0.3), (0.05, 0.2, 0.1))),
    "test-only: the general (N, K, d)-variance arithmetic")
NAMES = (*SUITE, "general")
N = 2000  # samples per sampler check (energy distance costs O(N^2))


def _task(name: str) -> GMMTask:
    if name != "general":
        return GMMTask(GMMConfig(testbed=name, m=2000, n=50))
    with pytest.MonkeyPatch.context() as mp:  # the config resolves the name once, at construction
        mp.setitem(TESTBEDS, "general", GENERAL)
        return GMMTask(GMMConfig(testbed="general", m=2000, n=50))


@pytest.fixture(scope="module", params=NAMES)
def task(request) -> GMMTask:
    return _task(request.param)


def _points(task: GMMTask, n: int = 48, seed: int = 0) -> torch.Tensor:
    """float64 points where p or q has mass, blurred so that the gaps between modes are covered too."""
    g = torch.Generator().manual_seed(seed)
    x = metrics.ratio_probe_points(task, n=n, seed=seed).double()
    return x + 0.3 * torch.randn(x.shape, generator=g, dtype=torch.float64)


def _autograd(fn, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x).sum(), x)
    return g


# --- the suite table -------------------------------------------------------------------------------------

def test_the_suite_holds_the_documented_instances():
    # guards the module table against drift: names, d, K, target weights and log r at the target means
    expected = {"paper": (2, 2, (0.5, 0.5), (4.3, 4.3)), "asym": (2, 2, (0.75, 0.25), (4.7, 3.6)),
                "d8": (8, 2, (0.5, 0.5), (3.8, 3.8)), "partial": (2, 3, (0.4, 0.4, 0.2), (4.1, 4.1, 4.6)),
                "near": (2, 2, (0.5, 0.5), (0.3, 0.3))}
    assert tuple(TESTBEDS) == SUITE and all(TESTBEDS[n].why for n in SUITE)  # one line of why each
    for name, (d, k, w, log_r) in expected.items():
        t = _task(name)
        assert (t.dim, t.num_labels) == (d, k), name
        assert t.target.weights.tolist() == pytest.approx(w), name
        assert t.log_ratio(t.target.means.double()).tolist() == pytest.approx(log_r, abs=0.05), name
    # guards partial's premise: the source puts 0.2 % of its mass where the target puts 20 %
    assert _task("partial").source.weights[2].item() == pytest.approx(0.002)


def test_paper_is_the_original_testbed_with_its_rng_order():
    task = GMMTask(GMMConfig(m=300, n=20, seed=4))
    g = torch.Generator().manual_seed(4000)
    means_s = torch.tensor([[0.5, 0.5], [-0.5, -0.5]])
    xs = means_s[torch.randint(0, 2, (300,), generator=g)] + math.sqrt(0.1) * torch.randn(300, 2, generator=g)
    # guards bit-for-bit paper draws: labels by randint, then noise, source first (pinned tables rest on it)
    assert GMMConfig().testbed == "paper" and torch.equal(task.draw("train")["source_x"], xs)
    assert task.source.var == 0.1 and task.target.means.tolist() == [[0.5, -0.5], [-0.5, 0.5]]


# --- exact quantities ------------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [None, 0.001, 0.2, 0.6, 1.0])
def test_exact_scores_are_autograd_of_exact_log_densities(task, t):
    x = _points(task)
    tt = None if t is None else torch.full((x.shape[0],), t, dtype=torch.float64)
    at = torch.zeros(x.shape[0], dtype=torch.float64) if tt is None else tt
    # guards the closed-form scores (posterior-weighted (alpha mu_k - x) / var_{t,k}) against log p_t, log q_t
    for score, log_density in ((task.source_score, task.log_p), (task.target_score, task.log_q)):
        torch.testing.assert_close(score(x, at), _autograd(lambda z: log_density(z, tt), x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("t", [0.05, 0.5])
def test_h_star_and_its_gradient(task, t):
    x = _points(task, seed=1)
    tt = torch.full((x.shape[0],), t, dtype=torch.float64)
    # guards h* = q_t / p_t (in logs)
    torch.testing.assert_close(task.log_h_star(x, tt), task.log_q(x, tt) - task.log_p(x, tt))
    g = task.grad_log_h_star(x, tt)
    # guards the decomposition grad log q_t = grad log p_t + grad log h*
    torch.testing.assert_close(g, task.target_score(x, tt) - task.source_score(x, tt))
    # guards grad log h* against an independent derivative of log h*
    torch.testing.assert_close(g, _autograd(lambda z: task.log_h_star(z, tt), x), rtol=1e-9, atol=1e-9)


def test_noised_marginals_are_convolutions_of_the_clean_mixtures(task):
    # p_t(x_t) = E_{x0 ~ p}[N(x_t; alpha x0, sigma^2 I)] by plain Monte Carlo: checks the noised components
    # N(alpha mu_k, diag(alpha^2 s_k^2 + sigma^2)) *and* the weights (a wrong weight moves the density)
    t = torch.tensor(0.3, dtype=torch.float64)
    a, s = float(task.schedule.alpha(t)), float(task.schedule.sigma(t))
    g = torch.Generator().manual_seed(5)
    for mix, log_density in ((task.source, task.log_p), (task.target, task.log_q)):
        x0 = mix.sample(100_000, g)[0].double()
        xt = a * mix.means.double() + 0.2  # near each mode, where the estimate is tight
        sq = ((xt[:, None] - a * x0[None]) ** 2).sum(-1)
        dens = torch.exp(-sq / (2 * s**2)) / (2 * math.pi * s**2) ** (task.dim / 2)
        mc, se = dens.mean(1), dens.std(1) / math.sqrt(x0.shape[0])
        exact = log_density(xt, torch.full((xt.shape[0],), 0.3, dtype=torch.float64)).exp()
        # guards the noised-mixture formula to 5 standard errors (the check has power: se < 2 % of the value)
        assert ((mc - exact).abs() < 5 * se).all() and (se < 0.02 * exact).all(), (mc, exact, se)


def test_h_star_tends_to_the_clean_ratio_at_small_t(task):
    x = metrics.ratio_probe_points(task, n=200, seed=2).double()
    # guards the t -> 0 limit: log h*(x, t_min) ~ log r(x) (the guidance target at small t is the ratio)
    torch.testing.assert_close(task.log_h_star(x, 1e-5), task.log_ratio(x), rtol=0, atol=1e-2)


def test_joint_ratio_marginalises_to_r(task):
    x = _points(task, seed=4)
    k = task.num_labels
    post = task.source.posterior(x)
    joint = torch.stack([task.log_joint_ratio(x, torch.eye(k)[[j] * x.shape[0]]) for j in range(k)], 1).exp()
    # guards the shared label space: E_{p(y|x)}[q(x, y) / p(x, y)] = q(x) / p(x), weights included
    torch.testing.assert_close((post * joint).sum(1).log(), task.log_ratio(x), rtol=1e-6, atol=1e-6)


def test_draws_follow_the_weights_and_label_layout(task):
    d = task.draw("train")
    # guards the stage data contract: (m, d) / (n, d) rows, one-hot labels over the shared K components
    assert d["source_x"].shape == (2000, task.dim) and d["target_y"].shape == (50, task.num_labels)
    assert torch.all(d["source_y"].sum(1) == 1)
    labels = task.target.sample(20_000, torch.Generator().manual_seed(6))[1]
    frac = torch.bincount(labels, minlength=task.num_labels).double() / labels.numel()
    # guards the label draw (randint for equal weights, multinomial otherwise) against the weights, 5 se
    assert ((frac - task.target.weights).abs() < 5 * (0.25 / labels.numel()) ** 0.5).all(), frac


# --- samplers driven by the exact fields ----------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(task):
    g = torch.Generator().manual_seed(123)
    ref, other = task.target.sample(N, g)[0], task.target.sample(N, g)[0]
    noise = torch.randn(N, task.dim, generator=g)
    # two independent true draws are ~c/N apart: 3x that + 1e-3 (solver error) is the pass mark (test_sampling)
    return {"ref": ref, "noise": noise, "tol": 3 * metrics.energy_distance(ref, other) + 1e-3}


def _check_target(x: torch.Tensor, task: GMMTask, reference: dict) -> None:
    ed = metrics.energy_distance(x, reference["ref"])
    # guards that the samples follow q: as close to a true draw as another true draw
    assert ed < reference["tol"], (ed, reference["tol"])
    frac = metrics.mode_fractions(x, task)
    # guards the mode weights (asym's 0.75 / 0.25, not 1/2 / 1/2; partial's 0.2 mode): within 0.04 (4 se at
    # N = 2000); a sampler pulled to the source's weights is off by 0.25 on asym
    assert (frac - task.target.weights).abs().max() < 0.04, frac
    assert metrics.mode_balance_error(x, task) < 0.05


def test_the_sampler_check_has_power(task, reference):
    src = task.source.sample(N, torch.Generator().manual_seed(7))[0]
    # guards the pass mark: true *source* samples fail it on every instance, near's small shift included
    assert metrics.energy_distance(src, reference["ref"]) > 3 * reference["tol"]


def test_exact_target_eps_reproduces_the_target(task, reference):
    x = dpm_solver_2(task.exact_eps("target"), task.schedule, reference["noise"], steps=25)
    _check_target(x, task, reference)


def test_oracle_guidance_reproduces_the_target(task, reference):
    # the theorem: eps_q = eps_p - sigma_t grad log h*; exact source eps + exact guidance is the target sampler
    eps = guided_eps(task.exact_eps("source"), task.grad_log_h_star, task.schedule, scale=1.0)
    t = torch.full((N,), 0.3)
    # guards the algebra pointwise: guided source eps == exact target eps
    torch.testing.assert_close(eps(reference["noise"], t), task.exact_eps("target")(reference["noise"], t),
                               rtol=1e-4, atol=1e-4)
    _check_target(dpm_solver_2(eps, task.schedule, reference["noise"], steps=25), task, reference)


# --- the mode-weight error ------------------------------------------------------------------------------

def test_mode_weight_error_is_measured_against_the_true_weights():
    task = _task("asym")
    heavy = task.target.means[0] + 0.1 * torch.randn(1000, 2, generator=torch.Generator().manual_seed(8))
    light = -heavy
    # guards "against the true weights", not 1/K: all mass in the 0.75 mode is off by 0.25, in the 0.25 mode
    # by 0.75 = 1 - min_k w_k (the maximum)
    assert metrics.mode_balance_error(heavy, task) == pytest.approx(0.25)
    assert metrics.mode_balance_error(light, task) == pytest.approx(0.75)
    paper = _task("paper")
    x = paper.target.sample(999, torch.Generator().manual_seed(9))[0]
    frac = torch.bincount(paper.target.component_log_probs(x).argmax(1), minlength=2).double() / 999
    # guards paper's values bit for bit: the original definition 1/2 sum |frac - 1/K|
    assert metrics.mode_balance_error(x, paper) == 0.5 * (frac - 0.5).abs().sum().item()


# --- configuration and the experiment -------------------------------------------------------------------

def test_config_refuses_paper_fields_with_another_testbed():
    # guards specific, early errors (STYLE 6): the message names the key and what is allowed
    with pytest.raises(ValueError, match=r"^dim: parametrises testbed 'paper' only; got 8 with testbed 'd8'"):
        GMMConfig(testbed="d8", dim=8)
    with pytest.raises(ValueError, match=r"^testbed: got 'd9'; allowed: \['paper', 'asym', 'd8'"):
        GMMConfig(testbed="d9")
    exp = get_experiment("gmm")
    with pytest.raises(ValueError, match=r"^data\.mu_target: parametrises testbed 'paper' only"):
        exp.check_data({"testbed": "asym", "mu_target": [0.5, 0.5]})
    exp.check_data({"testbed": "partial", "m": 500, "mu_source": [0.5, 0.5]})  # defaults restated are fine
    with pytest.raises(ValueError, match="the same K"):  # guards the shared label space
        Bed(TESTBEDS["paper"].source, TESTBEDS["partial"].target, "")
    with pytest.raises(ValueError, match="^weights: need 2 positive numbers summing to 1"):
        MixtureSpec(means=((0.0,), (1.0,)), weights=(0.7, 0.7))


def test_the_experiment_loads_any_d_and_plots_the_ratio_field_in_2d_only():
    exp = get_experiment("gmm")
    task, data = exp.load(exp.data_config({"testbed": "d8"}, 10, 0))
    # guards the stage data of a d = 8 instance (models are sized from these shapes)
    assert data["source_x"].shape == (10000, 8) and exp.shape(data) == (8,) and exp.num_labels(data) == 2
    clf8 = stages.build_classifier(ClassifierConfig(width=8, depth=1), (8,))
    # guards the plot: no log-ratio field for d != 2 (a 2-d slice would be arbitrary)
    assert log_ratio_grid(task, clf8) is None
    partial = _task("partial")
    grid = log_ratio_grid(partial, stages.build_classifier(ClassifierConfig(width=8, depth=1), (2,)), size=9)
    # guards the d = 2 plot: the window holds partial's third mode at (1.5, -1.5), the exact field is exact
    assert grid["x"][-1].item() == pytest.approx(1.5 * 1.5 + 1.0)
    pts = torch.stack([g.reshape(-1) for g in torch.meshgrid(grid["x"], grid["x"], indexing="xy")], 1)
    torch.testing.assert_close(grid["exact"].reshape(-1), partial.log_ratio(pts))
