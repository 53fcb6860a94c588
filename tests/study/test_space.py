"""The search space compiled to an Optuna define-by-run function, exercised with real Optuna studies."""

from __future__ import annotations

import functools
import math
import pickle
from pathlib import Path

import optuna
import pytest

from study.runtime import resolve, trial_runtime
from study.search import define_by_run, grid_search_space, make_sampler
from study.space import SAMPLERS, describe_space, params_to_overrides, switch_name
from study.spec import load_spec, parse_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[2]


def make_spec(space: dict, sampler: str = "random", objective=None):
    return parse_spec({
        "name": "t", "experiment": "gmm", "factors": {"n": [10]},
        "space": space, "sampler": sampler, "budget": {"trials_per_n": 1},
        "objective": objective or {"metric": "energy_distance", "direction": "minimize"},
    })


SPACE = {
    "guidance.eta_cycle": {"kind": "float", "low": 1e-3, "high": 10.0, "log": True, "off": 0.0},
    "guidance.width": {"kind": "categorical", "choices": [64, 128, 256]},
    "guidance.depth": {"kind": "int", "low": 2, "high": 6, "step": 2,
                       "when": {"param": "guidance.width", "in": [128, 256]}},
    "guidance.target_batch_size": {"kind": "categorical", "choices": [64, 128],
                                   "when": {"param": "guidance.eta_cycle", "off": False}},
    "sample.guidance_scale": {"kind": "float", "low": 0.5, "high": 2.0},
    "guidance.lr": {"kind": "float", "low": 1e-4, "high": 1e-2, "log": True},
}


def run_trials(space, sampler, n_trials, directions=("minimize",)):
    """A real Optuna study (``optimize``: GridSampler stops the study itself when the grid is exhausted).

    Returns [(trial.params, define_by_run's return value, trial.distributions)] per trial."""
    study = optuna.create_study(sampler=sampler, directions=list(directions))
    out = []

    def objective(trial):
        consts = define_by_run(trial, space)
        out.append((dict(trial.params), consts, dict(trial.distributions)))
        v = float(trial.number % 3)
        return tuple([v] * len(directions)) if len(directions) > 1 else v

    study.optimize(objective, n_trials=n_trials)
    return out


def test_conditionals_off_switch_and_log_bounds():
    spec = make_spec(SPACE)
    trials = run_trials(spec.space, optuna.samplers.RandomSampler(seed=0), 60)
    seen_off = seen_on = seen_depth = seen_no_depth = False
    for params, consts, dists in trials:
        assert set(consts) <= {"guidance.eta_cycle"}  # only switched-off paths come back (their off value)
        # conditional: depth only when width is 128/256
        if params["guidance.width"] in (128, 256):
            assert params["guidance.depth"] in (2, 4, 6)
            seen_depth = True
        else:
            assert "guidance.depth" not in params
            seen_no_depth = True
        # off-switch: "off" -> exactly 0.0 and the value is not sampled; "on" -> log-uniform within bounds
        sw = params[switch_name("guidance.eta_cycle")]
        if sw == "off":
            assert "guidance.eta_cycle" not in params and consts["guidance.eta_cycle"] == 0.0
            assert "guidance.target_batch_size" not in params  # condition "off: false" fails
            seen_off = True
        else:
            v = params["guidance.eta_cycle"]
            assert 1e-3 <= v <= 10.0 and dists["guidance.eta_cycle"].log
            assert "guidance.eta_cycle" not in consts
            assert params["guidance.target_batch_size"] in (64, 128)
            seen_on = True
        assert 1e-4 <= params["guidance.lr"] <= 1e-2 and dists["guidance.lr"].log
        assert 0.5 <= params["sample.guidance_scale"] <= 2.0
    assert seen_off and seen_on and seen_depth and seen_no_depth  # both branches were exercised


def test_params_to_overrides_and_resolved_config():
    spec = make_spec(SPACE)
    for params, consts, _ in run_trials(spec.space, optuna.samplers.RandomSampler(seed=1), 20):
        ov = params_to_overrides(spec.space, params)
        _, cfg = spec.resolved_config(10, 0, params)
        if params[switch_name("guidance.eta_cycle")] == "off":
            assert ov["guidance"]["eta_cycle"] == 0.0 and cfg.guidance.eta_cycle == 0.0
        else:
            assert cfg.guidance.eta_cycle == params["guidance.eta_cycle"]
        assert cfg.guidance.width == params["guidance.width"]
        # the Tune config (params + returned constants) resolves to the same config
        assert spec.resolved_config(10, 0, {**params, **consts}) == spec.resolved_config(10, 0, params)


def test_define_by_run_is_picklable():
    # OptunaSearch pickles its space function: module-level function + partial over a frozen spec
    spec = load_spec(ROOT / "search_spaces" / "gmm.yaml")
    fn = pickle.loads(pickle.dumps(functools.partial(define_by_run, space=spec.space)))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    assert isinstance(fn(trial), dict) and "guidance.width" in trial.params


def test_grid_sampler_enumerates_the_grid():
    space = {
        "guidance.eta_cycle": {"kind": "float", "low": 0.5, "high": 1.0, "step": 0.5, "off": 0.0},
        "guidance.width": {"kind": "categorical", "choices": [64, 128]},
        "guidance.depth": {"kind": "int", "low": 2, "high": 3},
    }
    spec = make_spec(space, sampler="grid")
    grid = grid_search_space(spec.space)
    assert grid["guidance.eta_cycle"] == [0.5, 1.0] and grid[switch_name("guidance.eta_cycle")] == ["off", "on"]
    size = math.prod(len(v) for v in grid.values())  # 2 * 2 * 2 * 2 = 16
    sampler = make_sampler("grid", spec.space, seed=0)
    trials = run_trials(spec.space, sampler, size)
    combos = {tuple(sorted(p.items())) for p, _, _ in trials}
    # every on-point is distinct; off-points collapse their unused eta value (2 duplicates each)
    assert len(combos) == 2 * 2 * 2 + 2 * 2
    for p, c, _ in trials:
        assert p["guidance.depth"] in (2, 3) and p["guidance.width"] in (64, 128)
        assert (c["guidance.eta_cycle"] == 0.0) if p[switch_name("guidance.eta_cycle")] == "off" \
            else p["guidance.eta_cycle"] in (0.5, 1.0)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs_the_default_space(sampler):
    if sampler == "cmaes":
        pytest.importorskip("cmaes")  # optional dependency of Optuna's CmaEsSampler (spec validation says so)
    spec_file = "gmm_smoke.yaml" if sampler != "grid" else None
    if spec_file is None:  # grid needs a finite space
        spec = make_spec({"guidance.width": {"kind": "categorical", "choices": [16, 32]},
                          "guidance.depth": {"kind": "int", "low": 1, "high": 2}}, sampler="grid")
    else:
        spec = load_spec(ROOT / "search_spaces" / spec_file)
    trials = run_trials(spec.space, make_sampler(sampler, spec.space, seed=0), 4)
    # the sampler drives all 4 trials, every one inside the space and resolving to a valid config
    assert len(trials) == 4
    rt = trial_runtime(spec, 10, 0, cache_dir="c", trials_dir="t", train_storage="s", classifier_searched=False)
    for params, consts, _ in trials:
        for path, p in spec.space.items():
            if p.off is not None and params[switch_name(path)] == "off":
                assert path not in params and consts[path] == p.off
            elif p.kind == "categorical":
                assert params[path] in p.choices
            else:
                assert p.low <= params[path] <= p.high
        _, cfg = resolve(rt, {**params, **consts})
        assert cfg == spec.resolved_config(10, 0, params)[1]
    # a seeded sampler is reproducible: the same seed gives the same first trials
    again = run_trials(spec.space, make_sampler(sampler, spec.space, seed=0), 4)
    assert [p for p, _, _ in again] == [p for p, _, _ in trials]


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random"])
def test_multi_objective_samplers(sampler):
    spec = load_spec(ROOT / "search_spaces" / "gmm_multiobjective.yaml")
    trials = run_trials(spec.space, make_sampler(sampler, spec.space, seed=0), 4, directions=spec.directions)
    assert len(trials) == 4


def test_describe_space_lists_every_parameter():
    text = describe_space(make_spec(SPACE).space)
    for path in SPACE:
        assert path in text
    assert "off-switch: 0.0 or searched" in text and "only when guidance.width in [128, 256]" in text
    assert "log" in text and "step 2" in text




@pytest.mark.parametrize("sampler", ["tpe", "random", "nsga2"])
def test_initial_trials_run_first_with_their_values(sampler):
    # a real Optuna study: the queued points are asked first and reproduce every value they set (the off
    # value included); what they leave out is sampled, and later trials are the sampler's own
    from study.space import initial_trial_params

    space = {**SPACE, "sample.guidance_scale": {"kind": "float", "low": 0.5, "high": 2.0, "step": 0.25},
             "guidance.lr": {"kind": "categorical", "choices": [1e-3, 2e-3]},
             "guidance.eta_cycle": {"kind": "float", "low": 1e-3, "high": 10.0, "step": 1e-3, "off": 0.0}}
    spec = make_spec(space, sampler=sampler)
    points = [{"guidance.eta_cycle": 0.0, "guidance.width": 256, "guidance.depth": 4, "sample.guidance_scale": 1.5},
              {"guidance.eta_cycle": 1.0, "guidance.target_batch_size": 128, "guidance.width": 64}]
    study = optuna.create_study(sampler=make_sampler(sampler, spec.space, seed=0))
    for point in points:
        study.enqueue_trial(initial_trial_params(spec.space, point))
    seen = []

    def objective(trial):
        consts = define_by_run(trial, spec.space)
        seen.append(spec.resolved_config(10, 0, {**trial.params, **consts})[1])
        return 0.0

    study.optimize(objective, n_trials=3)
    first, second = seen[0], seen[1]
    assert (first.guidance.eta_cycle, first.guidance.width, first.guidance.depth, first.sample.guidance_scale) == \
        (0.0, 256, 4, 1.5)
    assert (second.guidance.eta_cycle, second.guidance.target_batch_size, second.guidance.width) == (1.0, 128, 64)
    assert first.guidance.lr in (1e-3, 2e-3)  # left out: sampled
    assert len(seen) == 3  # the budget continues with sampled trials
