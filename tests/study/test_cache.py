"""Stage-cache keys and atomic entries (no Ray)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from study.cache import StageCache, baseline_key, classifier_key, classifier_searched, source_key
from study.experiments import get_experiment
from study.spec import load_spec

SMOKE = Path(__file__).resolve().parents[2] / "search_spaces" / "gmm_smoke.yaml"


def test_same_config_same_key_and_changes_change_it():
    spec = load_spec(SMOKE)
    d10, cfg = spec.resolved_config(10, 0)
    d10b, cfg_b = spec.resolved_config(10, 0)
    # identical configs -> identical keys (a resume and a later study find the same entries)
    assert source_key(d10, cfg) == source_key(d10b, cfg_b)
    assert classifier_key(d10, cfg) == classifier_key(d10b, cfg_b)
    assert baseline_key("vanilla", d10, cfg) == baseline_key("vanilla", d10b, cfg_b)
    d100, _ = spec.resolved_config(100, 0)
    # the source draw does not depend on n: one source model serves every n ...
    assert source_key(d10, cfg) == source_key(d100, cfg)
    # ... but the classifier and baselines do
    assert classifier_key(d10, cfg) != classifier_key(d100, cfg)
    assert baseline_key("vanilla", d10, cfg) != baseline_key("vanilla", d100, cfg)
    # a changed data config (other than n) changes the source key
    assert source_key(replace(d10, variance=0.2), cfg) != source_key(d10, cfg)
    assert source_key(replace(d10, seed=1), cfg) != source_key(d10, cfg)
    # a changed stage config changes exactly the keys that depend on it
    cfg_src = replace(cfg, source=replace(cfg.source, steps=cfg.source.steps + 1))
    assert source_key(d10, cfg_src) != source_key(d10, cfg)
    assert baseline_key("finetune", d10, cfg_src) != baseline_key("finetune", d10, cfg)  # finetune starts from it
    assert baseline_key("vanilla", d10, cfg_src) == baseline_key("vanilla", d10, cfg)  # vanilla does not use it
    cfg_cls = replace(cfg, classifier=replace(cfg.classifier, lr=0.5))
    assert classifier_key(d10, cfg_cls) != classifier_key(d10, cfg)
    # guidance knobs (what trials search) never touch a cached stage
    cfg_g = replace(cfg, guidance=replace(cfg.guidance, width=999))
    assert (source_key(d10, cfg_g), classifier_key(d10, cfg_g)) == (source_key(d10, cfg), classifier_key(d10, cfg))
    # every shared method of the experiment has its own entry
    methods = get_experiment("gmm").baselines
    assert len({baseline_key(m, d10, cfg) for m in methods}) == len(methods) == 6


def test_searched_classifier_is_not_cached():
    # guards which spaces share one cached classifier: only a parameter of the classifier section itself
    # makes every trial train its own (the time classifier and the guidance are trained per trial anyway)
    assert not classifier_searched({})
    assert not classifier_searched({"guidance.width": None, "sample.guidance_scale": None})
    assert not classifier_searched({"time_classifier.lr": None})  # a section whose name contains "classifier"
    assert classifier_searched({"classifier.weight_decay": None, "guidance.width": None})


def test_entries_are_atomic_and_weights_only(tmp_path):
    cache = StageCache(tmp_path / "c")
    assert cache.get("source", "k") is None
    state = {"w": torch.ones(3), "rng": torch.Generator().get_state(), "meta": {"steps": 3, "lr": 1e-3}}
    cache.put("source", "k", {"state": state})
    got = cache.get("source", "k")  # torch.load(weights_only=True) accepts tensors, generator states, dicts
    assert torch.equal(got["state"]["w"], state["w"]) and got["state"]["meta"]["steps"] == 3
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["source-k.pt"]  # no temp file left behind
