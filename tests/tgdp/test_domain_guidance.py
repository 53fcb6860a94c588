"""Domain Guidance (tgdp.sampling.domain_guidance_eps, tgdp.methods "domain_guidance"): the oracle on the GMM with
exact scores, the config check, the method at a tiny budget (plain and conditional) and its cache key."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from study.cache import baseline_key
from study.experiments import get_experiment
from tgdp import metrics, sampling, stages
from tgdp.config import DomainGuidanceConfig, GMMConfig, SampleConfig, ScoreConfig, TGDPConfig, from_dict
from tgdp.data.gmm import GMMTask
from tgdp.methods import METHODS, DomainGuidedScore, Fitted, get_method
from tgdp.reporter import MemoryReporter

CPU = torch.device("cpu")
N = 4000  # samples of the exact-score draws


class ExactNet(nn.Module):
    """An exact eps-function of the task as a score net (x, t, y) -> eps, labels ignored."""

    def __init__(self, eps) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x, t, y=None):
        return self.eps(x, t)


def _probe(task: GMMTask) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(256, 2, generator=g), torch.rand(256, generator=g) * (1 - 1e-3) + 1e-3


def test_exact_scores_at_weight_one_give_the_exact_target_eps(gmm_task):
    # the oracle of issue 14: eps_src + 1 * (eps_ft - eps_src) with exact scores IS the exact target eps
    eps_s, eps_t = gmm_task.exact_eps("source"), gmm_task.exact_eps("target")
    x, t = _probe(gmm_task)
    assert torch.equal(sampling.domain_guidance_eps(eps_s, eps_t, 1.0)(x, t), eps_t(x, t))
    # the same through the method's eps-net (what the study samples with)
    net = DomainGuidedScore(ExactNet(eps_s), ExactNet(eps_t), 1.0)
    assert torch.equal(net(x, t), eps_t(x, t))


def test_exact_scores_at_weight_two_extrapolate_away_from_the_source(gmm_task):
    # guards the formula (sign and factor): w = 2 gives 2 eps_t - eps_s, not eps_t and not the source
    eps_s, eps_t = gmm_task.exact_eps("source"), gmm_task.exact_eps("target")
    x, t = _probe(gmm_task)
    out = DomainGuidedScore(ExactNet(eps_s), ExactNet(eps_t), 2.0)(x, t)
    torch.testing.assert_close(out, 2 * eps_t(x, t) - eps_s(x, t), rtol=0, atol=1e-6)
    assert not torch.allclose(out, eps_t(x, t), atol=1e-3)  # the probe sees a real source/target difference


def test_sampling_with_exact_scores_at_weight_one_reproduces_the_target(gmm_task):
    # the sampled oracle: exact scores at w = 1 draw the target (within twice the noise floor of two true draws),
    # bit-identical to the exact-target oracle; w = 2 with the same scores is detectably off the target
    g = torch.Generator().manual_seed(11)
    ref, other = gmm_task.target.sample(N, g)[0], gmm_task.target.sample(N, g)[0]
    tol = 3 * metrics.energy_distance(ref, other) + 1e-3
    cfg = SampleConfig(num_samples=N, batch_size=N, seed=5)
    exact = (ExactNet(gmm_task.exact_eps("source")), ExactNet(gmm_task.exact_eps("target")))
    dg, oracle = get_method("domain_guidance"), get_method("oracle_target")
    x1 = dg.draw(Fitted(model=DomainGuidedScore(*exact, 1.0)), cfg, gmm_task.schedule, CPU, (2,))
    assert metrics.energy_distance(x1, ref) < tol
    assert torch.equal(x1, oracle.draw(Fitted(), cfg, gmm_task.schedule, CPU, (2,), task=gmm_task))
    x2 = dg.draw(Fitted(model=DomainGuidedScore(*exact, 2.0)), cfg, gmm_task.schedule, CPU, (2,))
    assert metrics.energy_distance(x2, ref) > 5 * tol  # the weight acts on the samples


def test_weight_below_one_is_refused_naming_the_key():
    # guards the config boundary: w < 1 would guide *towards* the source (not Domain Guidance), NaN/inf are no weight
    for bad in (0.99, 0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="weight: must be a finite number >= 1"):
            DomainGuidanceConfig(weight=bad)
    # from a spec or a YAML file the message carries the full key path
    with pytest.raises(ValueError, match=r"^domain_guidance\.weight: must be"):
        from_dict(TGDPConfig, {"domain_guidance": {"weight": 0.5}})
    assert from_dict(TGDPConfig, {"domain_guidance": {"weight": 1}}).domain_guidance.weight == 1.0  # w = 1 is valid
    assert DomainGuidanceConfig().weight >= 1  # the default passes its own check


def test_registered_as_a_shared_method_of_every_experiment():
    # guards how the study runs it: cached once per unit (shared), keyed by finetune + its own section + the source
    m = METHODS["domain_guidance"]
    assert m.sections == ("finetune", "domain_guidance")
    assert m.uses_source and m.shared and m.generates and not m.needs_task
    for name in ("gmm", "ecg", "arrays"):
        exp = get_experiment(name)
        assert "domain_guidance" in exp.baselines, name
        # finetune is fitted first in the shared loop, so DG finds its finished stage in the reporter
        assert exp.methods.index("finetune") < exp.methods.index("domain_guidance"), name


def _tiny(conditional: bool = False) -> TGDPConfig:
    score = ScoreConfig(width=16, depth=1, steps=6, batch_size=32, report_every=3, conditional=conditional)
    return TGDPConfig(source=score, finetune=replace(score, steps=4, lr=1e-3),
                      sample=SampleConfig(num_samples=24, steps=3, batch_size=16),
                      domain_guidance=DomainGuidanceConfig(weight=2.0))


@pytest.mark.parametrize("conditional", [False, True])
def test_fits_and_draws_at_a_tiny_budget(conditional):
    # guards the method end to end on the GMM, the conditional form too (both nets get the same labels)
    task = GMMTask(GMMConfig(m=128, n=16, seed=0))
    data, cfg = task.draw("train"), _tiny(conditional)
    source = stages.pretrain_source(cfg.source, data, task.schedule, CPU, MemoryReporter()).requires_grad_(False)
    m = get_method("domain_guidance")
    fitted = m.fit(cfg, data, source, task.schedule, CPU, MemoryReporter())
    labels = sampling.label_draw(data, cfg.sample.num_samples, cfg.sample.seed) if conditional else None
    assert (labels is not None) == conditional
    x = m.draw(fitted, cfg.sample, task.schedule, CPU, (2,), labels, source=source, task=task)
    assert x.shape == (cfg.sample.num_samples, 2) and torch.isfinite(x).all()
    assert fitted.model.weight == 2.0  # the config's weight reaches the sampler
    # the cache entry keeps the fine-tuned weights only (the source has its own entry)
    assert set(m.state(fitted)) == set(fitted.model.finetuned.state_dict())
    if conditional:  # the labels matter: the same noise with other labels gives other samples
        other = m.draw(fitted, cfg.sample, task.schedule, CPU, (2,), labels.flip(1), source=source, task=task)
        assert not torch.equal(x, other)


def test_reuses_the_finetune_fit_and_matches_it_at_weight_one():
    # guards the documented cost: after finetune in the same reporter DG trains nothing; with a fresh reporter
    # it refits to the very same weights (same config and seed); at w = 1 its samples are finetune's
    task = GMMTask(GMMConfig(m=128, n=16, seed=0))
    data, cfg = task.draw("train"), replace(_tiny(), domain_guidance=DomainGuidanceConfig(weight=1.0))
    source = stages.pretrain_source(cfg.source, data, task.schedule, CPU, MemoryReporter()).requires_grad_(False)
    ft, dg = get_method("finetune"), get_method("domain_guidance")
    rep = MemoryReporter()
    f_ft = ft.fit(cfg, data, source, task.schedule, CPU, rep)
    rows = len(rep.rows)
    f_dg = dg.fit(cfg, data, source, task.schedule, CPU, rep)
    assert len(rep.rows) == rows  # no finetune step ran again
    fresh = dg.fit(cfg, data, source, task.schedule, CPU, MemoryReporter())
    for fit in (f_dg, fresh):
        got = fit.model.finetuned.state_dict()
        assert all(torch.equal(v, got[k]) for k, v in f_ft.model.state_dict().items())
    x_ft = ft.draw(f_ft, cfg.sample, task.schedule, CPU, (2,))
    assert torch.equal(dg.draw(f_dg, cfg.sample, task.schedule, CPU, (2,), source=source), x_ft)


def test_cache_key_follows_the_weight_not_the_guidance():
    # guards the stage cache: a new w is a new entry; TGDP's guidance knobs never invalidate it; finetune's
    # own entry does not depend on w (it stays reusable across weights)
    data_cfg, cfg = GMMConfig(n=10), _tiny()
    key = baseline_key("domain_guidance", data_cfg, cfg)
    heavier = replace(cfg, domain_guidance=DomainGuidanceConfig(weight=3.0))
    assert baseline_key("domain_guidance", data_cfg, heavier) != key
    for change in ({"lr": 0.5}, {"width": 8}, {"eta_cycle": 1.0}):
        assert baseline_key("domain_guidance", data_cfg, replace(cfg, guidance=replace(cfg.guidance, **change))) == key
    assert baseline_key("domain_guidance", data_cfg, replace(cfg, finetune=replace(cfg.finetune, lr=0.5))) != key
    assert baseline_key("finetune", data_cfg, heavier) == baseline_key("finetune", data_cfg, cfg)
