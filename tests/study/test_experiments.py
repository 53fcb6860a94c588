"""The experiment objects (study/experiments/) tested directly: registry, spec-layer checks, GMM task and evaluation."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from study import UserError
from study.experiments import DIRECTIONS, EXPERIMENTS, experiment_for, get_experiment, metric_names
from study.experiments.gmm import log_ratio_grid
from tgdp import stages
from tgdp.config import ClassifierConfig, GMMConfig, SampleConfig, ScoreConfig, TGDPConfig
from tgdp.reporter import MemoryReporter

CPU = torch.device("cpu")


def _spec(experiment: str, metric: str, direction: str = "minimize") -> SimpleNamespace:
    """The parts of a StudySpec an experiment reads (name, objectives, evaluation overrides)."""
    return SimpleNamespace(experiment=experiment, metrics=[metric], directions=[direction], evaluation=None)


def test_registry_refuses_unknown_names_with_a_user_error():
    # guards the CLI contract: an unknown experiment is a UserError (exit 2) naming what is allowed
    with pytest.raises(UserError, match="experiment 'nope': unknown; allowed: gmm, ecg"):
        experiment_for(_spec("nope", "energy_distance"))
    assert isinstance(experiment_for(_spec("ecg", "feat_energy")), EXPERIMENTS["ecg"])


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_experiment_states_metrics_and_methods(name):
    # guards what the spec layer, the report and the cache read from each registered experiment
    exp = get_experiment(name)
    exp.check_methods()
    assert exp.name == name
    assert metric_names(name) and all(d in DIRECTIONS for d in exp.metrics.values())
    assert "tgdp" in exp.methods and exp.baselines  # the searched method and something to compare it with
    assert set(exp.baselines) < set(exp.methods)


def test_importing_the_spec_layer_stays_light():
    # guards CLI start-up: specs are validated through the registry without importing torch (seconds)
    code = "import sys, study.spec, study.experiments; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("name, data, key", [
    ("gmm", {"n": 5}, "data.n"),  # n comes from factors
    ("gmm", {"seed": 1}, "data.seed"),
    ("gmm", {"dim": 3}, "data.mu_source"),  # a cross-field check: means need dim coordinates
    ("gmm", {"variance": -1.0}, "data.variance"),
    ("gmm", {"bogus": 1}, "data: unknown key"),
    ("ecg", {"sim_target_records": 0}, "data.sim_target_records"),
    ("ecg", {"val": "lots"}, "data.val"),
])
def test_data_check_errors_name_the_key(name, data, key):
    # guards the spec messages: each bad data section names its key (the spec turns it into an Issue path)
    with pytest.raises(ValueError) as err:
        get_experiment(name).check_data(data)
    assert str(err.value).startswith(key)


def test_data_and_evaluation_configs():
    # guards the unit's data config (n and seed from factors) and which experiments have an evaluation section
    gmm, ecg = get_experiment("gmm"), get_experiment("ecg")
    assert gmm.data_config({"variance": 0.2}, 10, 3) == GMMConfig(variance=0.2, n=10, seed=3)
    with pytest.raises(ValueError, match="evaluation: experiment gmm has no evaluation settings"):
        gmm.evaluation_config({})
    assert ecg.evaluation_config({"epochs": 2}).epochs == 2
    with pytest.raises(ValueError, match="evaluation"):
        ecg.evaluation_config({"epochs": "many"})
    # the ECG cache key depends on the evaluation (a different utility classifier is a different result)
    spec = SimpleNamespace(**{**vars(_spec("ecg", "feat_energy")), "evaluation": {"epochs": 2}})
    d = ecg.data_config({"simulate": True}, 10, 0)
    assert ecg.baseline_key("real_only", d, TGDPConfig()) != get_experiment("ecg", spec).baseline_key(
        "real_only", d, TGDPConfig())


@pytest.mark.parametrize("name, metric, direction, expected", [
    ("gmm", "sliced_w2", "minimize", ("sliced_w2", "min")),
    ("gmm", "mean_log_q", "maximize", ("mean_log_q", "max")),
    ("ecg", "feat_frechet", "minimize", ("feat_frechet", "min")),  # the proxy reports it: ASHA uses it
    ("ecg", "macro_auroc", "maximize", ("feat_energy", "min")),  # no per-epoch value: the proxy instead
])
def test_asha_metric(name, metric, direction, expected):
    # guards what ASHA stops on: the first objective where the in-training evaluation reports it
    assert get_experiment(name, _spec(name, metric, direction)).asha_metric() == expected


@pytest.fixture(scope="module")
def gmm_unit():
    """A tiny GMM unit: (experiment, task, data, cfg) with a 400-sample, 12-step sampler."""
    exp = get_experiment("gmm", _spec("gmm", "energy_distance"))
    task, data = exp.load(GMMConfig(m=64, n=8, seed=0))
    cfg = TGDPConfig(source=ScoreConfig(width=16, depth=1, steps=2, batch_size=32, report_every=2),
                     classifier=ClassifierConfig(width=8, depth=1, steps=4, batch_size=32, report_every=2),
                     sample=SampleConfig(num_samples=400, steps=12, batch_size=400))
    return exp, task, data, cfg


def test_gmm_load_gives_the_stage_dict(gmm_unit):
    # guards the data contract of every stage: m source and n target rows of dim 2 with one-hot mode labels
    _, task, data, _ = gmm_unit
    assert data["source_x"].shape == (64, 2) and data["target_x"].shape == (8, 2)
    assert data["source_y"].shape == (64, 2) and torch.equal(data["target_y"].sum(1), torch.ones(8))
    assert task.schedule is get_experiment("gmm").schedule(task)  # stages train with the task's own schedule


def test_gmm_evaluate_separates_the_exact_target_from_a_bad_model(gmm_unit):
    # guards the evaluation end to end: the exact target score scores near the noise floor on both splits,
    # an untrained score net far above it
    exp, task, data, cfg = gmm_unit
    oracle = exp.evaluate("oracle_target", cfg, task, data, CPU)
    bad = stages.build_score(cfg.vanilla, (2,), 0, task.schedule).eval()
    untrained = exp.evaluate("vanilla", cfg, task, data, CPU, model=bad)
    for split in ("validation", "test"):
        assert oracle[split]["energy_distance"] < 0.02
        assert untrained[split]["energy_distance"] > 10 * oracle[split]["energy_distance"]
    assert oracle["validation_samples"].shape == (400, 2)
    # test samples use fresh sampler noise: the two splits are not the same draw
    assert oracle["validation"]["energy_distance"] != oracle["test"]["energy_distance"]


def test_gmm_diagnostics_and_ratio_grid(gmm_unit):
    # guards the trial's extra metrics and the plot data: finite ratio error of a real classifier, a grid
    # with the exact field, and no grid for the conditional version (its ratio is per label)
    exp, task, data, cfg = gmm_unit
    clf = stages.train_classifier(cfg.classifier, data, CPU, MemoryReporter())
    diag = exp.diagnostics(task, clf, None, cfg)
    assert torch.isfinite(torch.tensor(diag["log_ratio_rmse"])) and diag["guidance_grad_rmse"] != diag[
        "guidance_grad_rmse"]  # NaN: no guidance net yet
    grid = exp.ratio_grid(task, clf, cfg)
    assert grid["learned"].shape == grid["exact"].shape == (60, 60)
    torch.testing.assert_close(grid["exact"], log_ratio_grid(task, clf)["exact"])
    cond = replace(cfg, classifier=replace(cfg.classifier, conditional=True))
    assert exp.ratio_grid(task, clf, cond) is None
    assert get_experiment("ecg").ratio_grid(task, clf, cfg) is None  # no analytic ratio on real records
