"""The Method registry (tgdp/methods.py): one interface for every compared method, at a tiny GMM budget."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest
import torch

from study.cache import baseline_key
from study.experiments import EXPERIMENTS, get_experiment
from tgdp import stages
from tgdp.config import (ClassifierConfig, GMMConfig, GuidanceConfig, SampleConfig, ScoreConfig, TGDPConfig,
                         TimeClassifierConfig)
from tgdp.data.gmm import GMMTask
from tgdp.methods import METHODS, Fitted, get_method
from tgdp.reporter import MemoryReporter

CPU = torch.device("cpu")
GMM_METHODS = ("source_only", "vanilla", "finetune", "domain_guidance", "tgdp", "tgdp_reg", "oracle_guidance",
               "oracle_target")


def tiny_config() -> TGDPConfig:
    """Nets of a few units and budgets of a few steps: seconds for every method together."""
    score = ScoreConfig(width=16, depth=1, steps=4, batch_size=32, report_every=4)
    return TGDPConfig(
        source=score, vanilla=replace(score, seed=1), finetune=replace(score, steps=2),
        classifier=ClassifierConfig(width=8, depth=1, steps=4, batch_size=32, report_every=2),
        time_classifier=TimeClassifierConfig(width=8, depth=1, steps=2, batch_size=16, report_every=2),
        guidance=GuidanceConfig(width=8, depth=1, epochs=1, batch_size=64, references=64, target_batch_size=16),
        sample=SampleConfig(num_samples=24, steps=3, batch_size=16))


@pytest.fixture(scope="module")
def unit():
    """(task, data, cfg, source model) of one tiny GMM unit; the source is trained once for the module."""
    task = GMMTask(GMMConfig(m=128, n=16, seed=0))
    data, cfg = task.draw("train"), tiny_config()
    source = stages.pretrain_source(cfg.source, data, task.schedule, CPU, MemoryReporter())
    return task, data, cfg, source.eval().requires_grad_(False)


def test_registry_covers_every_method_an_experiment_offers():
    # guards the single source of method names: an experiment may only offer registered methods, and tgdp_reg
    # only with its regularised values stated
    for name, cls in EXPERIMENTS.items():
        cls().check_methods()
        assert set(cls.methods) <= set(METHODS), name
    assert set(GMM_METHODS) <= set(METHODS) and "real_only" in METHODS
    assert all(m.name == key for key, m in METHODS.items())  # the key is the method's own name
    with pytest.raises(ValueError, match="unknown method 'nope'; known: real_only"):
        get_method("nope")


def test_sections_are_config_sections_and_only_tgdp_is_searched():
    # guards the cache keys and the later searchable method configs: sections name real TGDPConfig sections
    fields = {f.name for f in dataclasses.fields(TGDPConfig)}
    for m in METHODS.values():
        assert set(m.sections) <= fields, m
    assert METHODS["vanilla"].sections == ("vanilla",) and METHODS["finetune"].sections == ("finetune",)
    # shared = computed once per unit and cached; the searched method and its regularised variant are not
    assert {n for n, m in METHODS.items() if not m.shared} == {"tgdp", "tgdp_reg"}
    assert get_experiment("gmm").baselines == ("vanilla", "finetune", "domain_guidance", "source_only",
                                               "oracle_guidance", "oracle_target")
    assert get_experiment("ecg").baselines == ("real_only", "vanilla", "finetune", "domain_guidance", "source_only")


@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if m.shared])
def test_cache_key_follows_the_declared_sections(name):
    # guards baseline_key: a method's entry is recomputed exactly when a config it reads changes
    m, data_cfg, cfg = METHODS[name], GMMConfig(n=10), tiny_config()
    key = baseline_key(name, data_cfg, cfg)
    for section in ("vanilla", "finetune", "source", "domain_guidance"):
        change = {"weight": 1.25} if section == "domain_guidance" else {"lr": 0.123}
        changed = replace(cfg, **{section: replace(getattr(cfg, section), **change)})
        reads = section in m.sections or (section == "source" and m.uses_source)
        assert (baseline_key(name, data_cfg, changed) != key) == reads, section
    assert baseline_key(name, data_cfg, replace(cfg, sample=replace(cfg.sample, steps=9))) != key  # sampler


def test_unshared_methods_have_no_cache_entry():
    # guards the cache against storing a searched method under an unsearched key
    for name in ("tgdp", "tgdp_reg"):
        with pytest.raises(ValueError, match="not a shared method"):
            baseline_key(name, GMMConfig(n=10), tiny_config())


@pytest.mark.parametrize("name", GMM_METHODS)
def test_each_gmm_method_fits_and_samples(unit, name):
    # guards the one interface: every GMM method fits and draws finite samples of the task's shape
    task, data, cfg, source = unit
    m = get_method(name)
    run_cfg = get_experiment("gmm").method_config(name, cfg)
    fitted = m.fit(run_cfg, data, source, task.schedule, CPU, MemoryReporter())
    x = m.draw(fitted, run_cfg.sample, task.schedule, CPU, (2,), source=source, task=task)
    assert x.shape == (cfg.sample.num_samples, 2)
    assert torch.isfinite(x).all()
    # only the methods that train a score model leave weights for the cache entry
    assert (m.state(fitted) is not None) == (name in ("vanilla", "finetune", "domain_guidance"))


def test_real_only_generates_nothing(unit):
    # guards the ECG reference: real_only has no samples (its evaluation uses the real records alone)
    task, data, cfg, source = unit
    m = get_method("real_only")
    fitted = m.fit(cfg, data, source, task.schedule, CPU, MemoryReporter())
    assert not m.generates and m.draw(fitted, cfg.sample, task.schedule, CPU, (2,), source=source) is None


def test_oracle_guidance_honours_guidance_t_max(unit):
    # guards issue 13: the oracle cuts its guidance at sample.guidance_t_max like the learned one; below t_min
    # nothing is guided, so the samples are the source model's from the same noise
    task, data, cfg, source = unit
    oracle, plain = get_method("oracle_guidance"), get_method("source_only")
    off = replace(cfg.sample, guidance_t_max=1e-9)
    src = plain.draw(plain.fit(cfg, data, source, task.schedule, CPU, None), off, task.schedule, CPU, (2,))
    cut = oracle.draw(Fitted(), off, task.schedule, CPU, (2,), source=source, task=task)
    full = oracle.draw(Fitted(), cfg.sample, task.schedule, CPU, (2,), source=source, task=task)
    torch.testing.assert_close(cut, src, rtol=0, atol=0)
    assert not torch.allclose(full, src)  # at t_max = 1 the exact guidance does move the samples


def test_tgdp_reg_applies_the_experiments_regularised_values(unit):
    # guards that tgdp_reg's weights come from the experiment object (stated there), and that they reach the fit
    _, _, cfg, _ = unit
    gmm, ecg = get_experiment("gmm"), get_experiment("ecg")
    g = gmm.method_config("tgdp_reg", cfg).guidance
    assert (g.eta_cycle, g.eta_consistency, g.target_batch_size) == (1.0, 0.1, 64)
    e = ecg.method_config("tgdp_reg", cfg).guidance
    assert (e.eta_cycle, e.eta_consistency, e.target_batch_size) == (0.1, 0.01, cfg.guidance.target_batch_size)
    assert gmm.method_config("tgdp", cfg) == cfg  # plain tgdp runs the config as given
    with pytest.raises(ValueError, match="regularised"):
        get_method("tgdp_reg").configure(cfg)  # no overrides: refused, never silently plain tgdp


def test_tgdp_reg_trains_with_the_regularisers(unit):
    # guards the path from the experiment's values to the loss: the consistency term is reported only when on
    task, data, cfg, source = unit
    losses = {}
    for name in ("tgdp", "tgdp_reg"):
        rep = MemoryReporter()
        get_method(name).fit(get_experiment("gmm").method_config(name, cfg), data, source, task.schedule, CPU, rep)
        losses[name] = [r.get("loss_consistency", 0.0) for r in rep.rows if r["stage"] == "guidance"]
    assert any(v > 0 for v in losses["tgdp_reg"]) and not any(v > 0 for v in losses["tgdp"])
