"""study/runtime.py: the typed trial contract that crosses Ray (TrialRuntime, resolve)."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from study.runtime import ResolvedTrial, TrialRuntime, resolve, trial_runtime, with_values
from study.search import define_by_run, make_sampler
from study.space import initial_trial_params, switch_name
from study.spec import load_spec
from tgdp.config import TGDPConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[2]
SPECS = ("gmm.yaml", "gmm_smoke.yaml")


def runtime(spec, n: int = 100, seed: int = 3) -> TrialRuntime:
    return trial_runtime(spec, n, seed, cache_dir="/c", trials_dir="/s/trials/n100", train_storage="/s/ray/_train_runs",
                         classifier_searched=False)


def tune_configs(spec, trials: int, seed: int = 0) -> list[dict]:
    """What OptunaSearch hands Tune for each trial: the suggested params with define_by_run's return merged
    over them (ray.tune.search.optuna: ``{**captured, **returned}``), the initial trials first."""
    study = optuna.create_study(sampler=make_sampler("random", spec.space, seed=seed))
    for point in spec.initial_trials or ():
        study.enqueue_trial(initial_trial_params(spec.space, point))
    out = []
    for _ in range(trials):
        t = study.ask()
        returned = define_by_run(t, spec.space)
        out.append({**t.params, **returned})
        study.tell(t, 0.0)
    return out


@pytest.mark.parametrize("name", SPECS)
def test_runtime_round_trips_and_is_frozen(name):
    spec = load_spec(ROOT / "search_spaces" / name)
    rt = runtime(spec)
    # pickled across Ray (tune.with_parameters, Train's loop config): an equal object comes back
    again = pickle.loads(pickle.dumps(rt))
    assert again == rt and isinstance(again.base, TGDPConfig)
    trial = ResolvedTrial(runtime=rt, trial_id="abc_00001", params={"guidance.width": 16}, cfg=rt.base)
    assert pickle.loads(pickle.dumps(trial)) == trial and trial.trial_dir == "/s/trials/n100/abc_00001"
    with pytest.raises(dataclasses.FrozenInstanceError):
        rt.n = 10  # type: ignore[misc]
    # the runtime holds the resolved unit, not the spec: data and base config are those of spec.resolved_config
    assert (rt.data, rt.base) == spec.resolved_config(100, 3)
    assert rt.searched == tuple(spec.space) and rt.metrics == tuple(spec.metrics)
    assert rt.directions == tuple(spec.directions) and rt.experiment == spec.experiment
    assert (rt.workers, rt.cpus_per_trial) == (spec.resources.workers_per_trial, spec.resources.cpus_per_trial)
    assert not any(isinstance(v, type(spec)) for v in vars(rt).values())  # no spec inside


@pytest.mark.parametrize("name", SPECS)
def test_resolve_equals_the_specs_resolved_config(name):
    # guards "workers never parse the spec": the runtime alone gives exactly the config the spec would,
    # for every sampled trial of the shipped spaces (switches on and off, `when` conditions, initial trials)
    spec = load_spec(ROOT / "search_spaces" / name)
    rt = runtime(spec)
    configs = tune_configs(spec, 40)
    switches = [path for path, p in spec.space.items() if p.off is not None]
    for path in switches:  # both branches of every switch were exercised
        assert {c[switch_name(path)] for c in configs} == {"off", "on"}, path
    for config in configs:
        assert resolve(rt, config) == spec.resolved_config(100, 3, config)
        # Optuna's own params (no off values) resolve the same through the spec
        params = {k: v for k, v in config.items() if k in spec.space and not (
            spec.space[k].off is not None and config.get(switch_name(k)) == "off")}
        params.update({k: v for k, v in config.items() if k.endswith(":switch")})
        assert spec.resolved_config(100, 3, params) == resolve(rt, config)


def test_a_searched_value_reaches_its_config_field_under_its_name():
    spec = load_spec(ROOT / "search_spaces" / "gmm.yaml")
    rt = runtime(spec)
    _, cfg = resolve(rt, {"guidance.eta_consistency:switch": "on", "guidance.eta_consistency": 0.0123,
                          "guidance.width": 128, "sample.guidance_scale": 1})
    assert cfg.guidance.eta_consistency == 0.0123 and cfg.guidance.width == 128
    assert cfg.sample.guidance_scale == 1.0 and isinstance(cfg.sample.guidance_scale, float)  # coerced
    assert cfg.guidance.eta_cycle == rt.base.guidance.eta_cycle  # not in the config: the base value
    # switched off: the Tune config holds the off value under the path (define_by_run's return)
    _, off = resolve(rt, {"guidance.eta_consistency:switch": "off", "guidance.eta_consistency": 0.0})
    assert off.guidance.eta_consistency == 0.0
    # keys that are not searched paths are ignored (switches, anything else)
    assert resolve(rt, {"foo": 1, "guidance.eta_cycle:switch": "on"})[1] == rt.base


def test_with_values_checks_like_the_spec():
    base = TGDPConfig()
    assert with_values(base, {}) == base
    assert with_values(base, {"guidance.lr": 1e-3, "source.width": 64}) == dataclasses.replace(
        base, guidance=dataclasses.replace(base.guidance, lr=1e-3), source=dataclasses.replace(base.source, width=64))
    with pytest.raises(ValueError, match=r"guidance\.width: expected an integer"):
        with_values(base, {"guidance.width": 1.5})
    with pytest.raises(ValueError, match=r"guidance\.eta_consistency: must be >= 0"):
        with_values(base, {"guidance.eta_consistency": -1.0})


def test_the_experiment_is_built_from_the_runtime():
    # the trial's Train workers build their experiment object from the runtime (no spec behind Ray)
    from study.experiments import experiment_for

    spec = load_spec(ROOT / "search_spaces" / "gmm_smoke.yaml")
    rt = runtime(spec)
    exp, ref = experiment_for(rt), experiment_for(spec)
    assert type(exp) is type(ref) and exp.asha_metric() == ref.asha_metric()
    assert exp.baseline_key("vanilla", rt.data, rt.base) == ref.baseline_key("vanilla", *spec.resolved_config(100, 3))


def test_trial_code_never_imports_the_spec_layer():
    # what runs behind Ray (the trainable, the Train loops, the experiments) imports neither study.spec nor YAML
    code = ("import sys, study.trial, study.runtime, study.ray_reporter, study.experiments; "
            "bad = [m for m in ('study.spec', 'study.yaml_io', 'yaml', 'study.runner') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
