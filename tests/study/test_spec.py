"""Study spec validation: every bad spec names the file, the key path, the bad value and what is allowed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from study import SpecError, UserError
from study.paths import StudyPathError, open_study_dir, study_paths, validate_study_name
from study.spec import (
    check_resources, dump_spec, load_spec, parse_spec, read_study_spec, spec_hash, write_spec,
)
from tgdp.config import GMMConfig, TGDPConfig

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "search_spaces" / "gmm_smoke.yaml"


def base() -> dict:
    return yaml.safe_load(SMOKE.read_text())


def write(tmp_path: Path, data: dict | str, name: str = "bad_spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return p


def _set(d: dict, path: str, value) -> dict:
    *head, last = path.split("/")
    for k in head:
        d = d.setdefault(k, {})
    d[last] = value
    return d


def _mut(**changes):
    """Mutation of the smoke spec: keys are '/'-separated paths (space keys contain dots)."""
    def apply(d: dict) -> dict:
        for path, value in changes.items():
            _set(d, path.replace("__", "/"), value)
        return d
    return apply


def _multi(d):
    d["sampler"] = "cmaes"
    d["objective"] = [{"metric": "energy_distance", "direction": "minimize"},
                      {"metric": "sliced_w2", "direction": "minimize"}]
    return d


def _space(**params):
    def apply(d):
        d["space"] = dict(params)
        return d
    return apply


COND_LATER = {"guidance.depth": {"kind": "int", "low": 1, "high": 3,
                                 "when": {"param": "guidance.width", "equals": 16}},
              "guidance.width": {"kind": "categorical", "choices": [16, 32]}}

# (id, mutation, substrings that must all appear in the message)
BAD = [
    ("unknown-top-level-key", _mut(colour="red"), ["colour", "unknown key", "allowed", "budget"]),
    ("unknown-stage-key", _mut(fixed__guidance__widht=3), ["fixed.guidance", "widht", "allowed", "'width'"]),
    ("unknown-stage", _mut(fixed__guidanse={"width": 3}), ["fixed", "guidanse", "allowed", "guidance"]),
    ("wrong-type", _mut(budget__trials_per_n="four"), ["budget.trials_per_n", "'four'", "valid integer"]),
    ("wrong-type-in-fixed", _mut(fixed__sample__steps=2.5), ["fixed.sample.steps", "got 2.5", "allowed: an integer"]),
    ("empty-range", _space(**{"guidance.width": {"kind": "int", "low": 8, "high": 4}}),
     ["space.guidance.width.low", "got 8", "low < high"]),
    ("log-nonpositive", _space(**{"guidance.lr": {"kind": "float", "low": 0.0, "high": 0.1, "log": True}}),
     ["space.guidance.lr.low", "got 0.0", "low > 0"]),
    ("cond-unknown-param", _space(**{"guidance.width": {"kind": "categorical", "choices": [16, 32],
                                                        "when": {"param": "guidance.nope", "equals": 1}}}),
     ["space.guidance.width.when.param", "'guidance.nope'", "unknown parameter", "defined before"]),
    ("cond-later-param", _space(**COND_LATER), ["space.guidance.depth.when.param", "'guidance.width'", "later"]),
    ("unknown-sampler", _mut(sampler="bayes"), ["sampler", "'bayes'", "'tpe'", "'nsga2'"]),
    ("unknown-metric", _mut(objective={"metric": "fid", "direction": "minimize"}),
     ["objective.0.metric", "'fid'", "energy_distance"]),
    ("bad-direction", _mut(objective={"metric": "sliced_w2", "direction": "down"}),
     ["objective.0.direction", "'down'", "'minimize'"]),
    ("cmaes-multiobjective", _multi, ["sampler", "'cmaes'", "single-objective", "nsga2"]),
    ("unsafe-name", _mut(name="../x"), ["name", "'../x'", "A-Z"]),
    ("invalid-n-zero", _mut(factors__n=[10, 0]), ["factors.n.1", "got 0", "greater than 0"]),
    ("invalid-n-empty", _mut(factors__n=[]), ["factors.n", "empty list", "non-empty"]),
    ("invalid-n-duplicate", _mut(factors__n=[10, 10]), ["factors.n", "[10, 10]", "distinct"]),
    ("resources-cannot-fit", _mut(resources={"workers_per_trial": 4, "cpus_per_worker": 1, "cpus_per_trial": 1,
                                             "num_cpus": 2}),
     ["resources.workers_per_trial", "needs 5 CPUs", "got 4", "workers_per_trial <= 1"]),
    ("categorical-no-choices", _space(**{"guidance.width": {"kind": "categorical", "choices": []}}),
     ["space.guidance.width.choices", "got []", "non-empty"]),
    ("grid-continuous", lambda d: _mut(sampler="grid")(d),
     ["space.sample.guidance_scale", "grid", "float with step"]),
    ("unknown-config-path", _space(**{"guidance.widht": {"kind": "int", "low": 1, "high": 3}}),
     ["space.guidance.widht", "not a searchable config path", "did you mean guidance.width"]),
    ("float-kind-for-int-field", _space(**{"guidance.width": {"kind": "float", "low": 1, "high": 3}}),
     ["space.guidance.width.kind", "'float'", "int or categorical"]),
    ("unknown-kind", _space(**{"guidance.width": {"kind": "uniform", "low": 1, "high": 3}}),
     ["space.guidance.width.kind", "'uniform'", "categorical"]),
    ("unknown-param-key", _space(**{"guidance.lr": {"kind": "float", "lo": 1e-4, "high": 0.1}}),
     ["space.guidance.lr.lo", "unknown key", "high"]),
    ("choice-wrong-type", _space(**{"guidance.width": {"kind": "categorical", "choices": [16, "wide"]}}),
     ["space.guidance.width.choices.1", "'wide'", "allowed: an integer"]),
    ("data-sets-n", _mut(data={"n": 5}), ["data.n", "factors.n"]),
    ("unknown-experiment", _mut(experiment="mnist"), ["experiment", "'mnist'", "gmm"]),
    ("grace-after-max", _mut(early_stopping={"grace_period": 5, "max_epochs": 2}),
     ["early_stopping.grace_period", "got 5", "<= max_epochs (2)"]),
    ("cond-value-impossible", _space(**{"guidance.width": {"kind": "categorical", "choices": [16, 32]},
                                        "guidance.depth": {"kind": "int", "low": 1, "high": 3,
                                                           "when": {"param": "guidance.width", "equals": 64}}}),
     ["space.guidance.depth.when.equals", "got 64", "[16, 32]"]),
    ("initial-unknown-path", _mut(initial_trials=[{"guidance.depth": 2}]),
     ["initial_trials.0.guidance.depth", "not a parameter of `space`", "guidance.width"]),
    ("initial-out-of-range", _mut(initial_trials=[{"sample.guidance_scale": 2.0}]),
     ["initial_trials.0.sample.guidance_scale", "got 2.0", "a number in [0.5, 1.5]"]),
    ("initial-not-a-choice", _mut(initial_trials=[{"guidance.width": 64}]),
     ["initial_trials.0.guidance.width", "got 64", "one of [16, 32]"]),
    ("initial-bool-for-number", _mut(initial_trials=[{"guidance.eta_cycle": True}]),
     ["initial_trials.0.guidance.eta_cycle", "got True", "or the off value 0.0"]),
    ("initial-with-grid", lambda d: _mut(sampler="grid", space={"guidance.width": d["space"]["guidance.width"]},
                                         initial_trials=[{"guidance.width": 16}])(d),
     ["initial_trials", "grid sampler runs every grid point", "another sampler"]),
    ("initial-more-than-budget", _mut(initial_trials=[{}, {}, {}]),
     ["initial_trials", "got 3", "at most budget.trials_per_n (2)"]),
    ("initial-never-sampled", lambda d: _mut(initial_trials=[{"guidance.width": 32, "guidance.depth": 2}])(
        _space(**{"guidance.width": {"kind": "categorical", "choices": [16, 32]},
                  "guidance.depth": {"kind": "int", "low": 1, "high": 3,
                                     "when": {"param": "guidance.width", "equals": 16}}})(d)),
     ["initial_trials.0.guidance.depth", "never sampled with guidance.width = 32", "leave guidance.depth out"]),
]


@pytest.mark.parametrize("mutate, expected", [(m, e) for _, m, e in BAD], ids=[i for i, _, _ in BAD])
def test_bad_spec_message(tmp_path, mutate, expected):
    path = write(tmp_path, mutate(base()))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    msg = str(err.value)
    assert "bad_spec.yaml" in msg  # the file is named
    for part in expected:  # key path, bad value, what is allowed
        assert part in msg, f"{part!r} missing from:\n{msg}"
    assert "pydantic" not in msg and "errors.pydantic.dev" not in msg  # no raw pydantic dumps


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "name: x\nexperiment: gmm\nfactors: {n: [10, 100\nbudget: 3\n")
    with pytest.raises(SpecError, match=r"bad_spec\.yaml: line \d+, column \d+: YAML error"):
        load_spec(path)


def test_python_tags_are_refused(tmp_path):
    # safe_load semantics: no object construction from the spec file
    path = write(tmp_path, "name: !!python/object/apply:os.system ['echo pwned']\nexperiment: gmm\n")
    with pytest.raises(SpecError, match=r"bad_spec\.yaml: line 1.*python/object"):
        load_spec(path)


def test_duplicate_keys_are_refused(tmp_path):
    # plain safe_load would silently keep the last value
    text = SMOKE.read_text() + "sampler: random\n"
    with pytest.raises(SpecError, match=r"duplicate key 'sampler'"):
        load_spec(write(tmp_path, text))


def test_yaml12_scalars(tmp_path):
    # "off:" stays a key (YAML 1.1 would read it as False) and 1e-3 is a float, not a string
    text = SMOKE.read_text().replace("low: 1.0e-2", "low: 1e-2")
    spec = load_spec(write(tmp_path, text))
    assert spec.space["guidance.eta_cycle"].low == 0.01 and spec.space["guidance.eta_cycle"].off == 0.0


def test_not_a_mapping_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(SpecError, match="nope.yaml.*cannot read"):
        load_spec(tmp_path / "nope.yaml")


def test_several_problems_reported_together(tmp_path):
    d = base()
    d["sampler"] = "bayes"
    d["budget"]["trials_per_n"] = 0
    err = pytest.raises(SpecError, load_spec, write(tmp_path, d)).value
    assert len(err.issues) == 2 and "2 problems" in str(err)


@pytest.mark.parametrize("name", ["gmm", "gmm_smoke", "gmm_multiobjective"])
def test_shipped_specs_load_and_round_trip(name):
    spec = load_spec(ROOT / "search_spaces" / f"{name}.yaml")
    again = parse_spec(yaml.safe_load(dump_spec(spec)))
    assert again == spec and spec_hash(again) == spec_hash(spec)  # dump_spec is lossless
    check_resources(spec, cpus=2, gpus=0)  # every shipped study fits the 2-core box


def test_default_study_searches_the_required_knobs():
    spec = load_spec(ROOT / "search_spaces" / "gmm.yaml")
    for path in ("guidance.eta_cycle", "guidance.eta_consistency", "guidance.width", "guidance.depth",
                 "guidance.lr", "guidance.epochs", "sample.guidance_scale"):
        assert path in spec.space
    assert spec.space["guidance.eta_cycle"].off == 0.0 and spec.space["guidance.eta_consistency"].off == 0.0
    assert spec.factors.n == (10, 100, 1000)
    mo = load_spec(ROOT / "search_spaces" / "gmm_multiobjective.yaml")
    assert mo.multi_objective and mo.sampler == "nsga2"


def test_default_study_fixes_what_the_fixed_config_experiment_fixes():
    # gmm.yaml repeats tgdp-study gmm's classifier budget and guidance cut-off: a change to one must reach both
    from study.experiments.gmm_defaults import GMM_CLASSIFIER, GMM_SAMPLE, default_config

    base, fixed = load_spec(ROOT / "search_spaces" / "gmm.yaml").base_config(), default_config(0)
    assert {k: getattr(base.classifier, k) for k in GMM_CLASSIFIER} == GMM_CLASSIFIER
    assert {k: getattr(base.sample, k) for k in GMM_SAMPLE} == GMM_SAMPLE
    assert base.classifier == replace(fixed.classifier, seed=base.classifier.seed)


def test_spec_is_frozen():
    spec = load_spec(SMOKE)
    with pytest.raises(Exception):
        spec.sampler = "random"  # type: ignore[misc]


def test_hash_tracks_semantics_not_resources(tmp_path):
    a = load_spec(SMOKE)
    d = base()
    d["resources"]["max_concurrent_trials"] = 2  # same study on a bigger cluster: same hash
    assert spec_hash(load_spec(write(tmp_path, d, "b.yaml"))) == spec_hash(a)
    d["space"]["guidance.width"]["choices"] = [16, 64]  # a changed search space: different hash
    assert spec_hash(load_spec(write(tmp_path, d, "c.yaml"))) != spec_hash(a)


def test_resolved_config_applies_fixed_seed_and_params():
    spec = load_spec(SMOKE)
    params = {"guidance.eta_cycle:switch": "off", "guidance.eta_consistency:switch": "on",
              "guidance.eta_consistency": 0.05, "guidance.width": 16, "sample.guidance_scale": 1.25}
    data, cfg = spec.resolved_config(100, 3, params)
    assert data == GMMConfig(m=2000, n=100, seed=3)
    # every field that differs from the TGDPConfig defaults, and why: the whole config, not a few fields
    fixed = {f"{sec}.{k}": v for sec, section in base()["fixed"].items() for k, v in section.items()}
    seeds = {f"{sec}.seed": 3 for sec in TGDPConfig.__dataclass_fields__  # the factor seed reaches every stage
             if hasattr(getattr(TGDPConfig(), sec), "seed")}
    searched = {"guidance.eta_consistency": 0.05, "guidance.width": 16, "sample.guidance_scale": 1.25}
    # (eta_cycle switched off -> exactly its off value 0.0, the default: no difference)
    assert _changed(cfg) == {**_without_defaults(fixed), **seeds, **searched}
    assert cfg.guidance.eta_cycle == 0.0 and cfg.guidance.width == 16  # the sampled value beats fixed (32)
    _, plain = spec.resolved_config(10, 0)
    assert _changed(plain) == _without_defaults(fixed)  # nothing sampled, seed 0 (the default) -> fixed only


def _changed(cfg: TGDPConfig) -> dict:
    """{"section.field": value} for every field of ``cfg`` that differs from its section class's defaults.

    A spec's section starts from its class's defaults (``ScoreConfig()`` for vanilla and finetune), not from
    ``TGDPConfig()``'s per-section ones (finetune: 1500 steps, lr 1e-4): ``tgdp.config.from_dict`` builds
    every section it is given from its class, and the spec always gives every section (its seed)."""
    return {f"{sec}.{k}": v for sec in TGDPConfig.__dataclass_fields__
            for k, v in vars(getattr(cfg, sec)).items() if getattr(type(getattr(cfg, sec))(), k) != v}


def _without_defaults(values: dict) -> dict:
    sections = {sec: type(getattr(TGDPConfig(), sec))() for sec in TGDPConfig.__dataclass_fields__}
    return {k: v for k, v in values.items() if getattr(sections[k.split(".")[0]], k.split(".")[1]) != v}


def test_max_epochs_defaults_to_guidance_epochs():
    assert load_spec(ROOT / "search_spaces" / "gmm.yaml").max_epochs == 20  # top of the searched range
    d = base()
    d["early_stopping"].pop("max_epochs")
    assert parse_spec(d).max_epochs == 2  # fixed guidance.epochs


def test_check_resources_reports_what_fits():
    d = base()
    d["resources"] = {"workers_per_trial": 2, "cpus_per_worker": 0.5, "cpus_per_trial": 0.5,
                      "max_concurrent_trials": 3}
    spec = parse_spec(d, "r.yaml")
    check_resources(spec, cpus=8, gpus=0)
    with pytest.raises(SpecError, match=r"r\.yaml: resources\.max_concurrent_trials.*got 3; allowed: <= 1"):
        check_resources(spec, cpus=2, gpus=0)
    d["resources"] = {"workers_per_trial": 2, "gpus_per_worker": 1}
    with pytest.raises(SpecError, match=r"resources\.gpus_per_worker.*needs 2 GPUs.*has 1"):
        check_resources(parse_spec(d), cpus=64, gpus=1)


def test_objective_metrics_come_from_the_experiment_registry(monkeypatch):
    # guards the single source of metric names: the spec accepts exactly what the experiment object lists
    from study.experiments import GMMExperiment

    d = base()
    d["objective"] = {"metric": "log_ratio_rmse", "direction": "minimize"}
    parse_spec(d)
    monkeypatch.setattr(GMMExperiment, "metrics", {"energy_distance": "minimize"})
    with pytest.raises(SpecError, match=r"objective\.0\.metric.*allowed: energy_distance"):
        parse_spec(d)


def test_study_paths_and_spec_files(tmp_path):
    spec = load_spec(SMOKE)
    paths = study_paths(tmp_path, spec.name)
    assert paths.root == (tmp_path / "gmm-smoke").resolve() and paths.optuna_url.startswith("sqlite:////")
    write_spec(spec, paths)
    assert read_study_spec(open_study_dir(paths.root)) == spec
    with pytest.raises(UserError, match="already exists"):
        write_spec(spec, paths)
    paths.spec.write_text(paths.spec.read_text().replace("trials_per_n: 2", "trials_per_n: 3"))
    with pytest.raises(UserError, match="changed since the study was created"):
        read_study_spec(paths)  # resume refuses an edited spec


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "x..y", "a" * 65, "a b"])
def test_unsafe_study_names(name):
    with pytest.raises(StudyPathError, match="invalid study name"):
        validate_study_name(name)


def test_open_study_dir_needs_spec_yaml(tmp_path):
    with pytest.raises(StudyPathError, match=r"not a study directory: .* \(no spec\.yaml\)"):
        open_study_dir(tmp_path)


def test_spec_and_errors_pickle(tmp_path):
    # specs travel to Ray workers and errors come back from them
    import pickle

    spec = load_spec(SMOKE)
    assert pickle.loads(pickle.dumps(spec)) == spec
    err = pytest.raises(SpecError, parse_spec, {"name": "x", "experiment": "gmm", "factors": {"n": [0]},
                                                "objective": {"metric": "sliced_w2", "direction": "minimize"},
                                                "budget": {"trials_per_n": 1}}, "p.yaml").value
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.issues == err.issues and "p.yaml: factors.n.0" in str(again)


def test_initial_trials_become_optuna_params_with_switches():
    # the off value turns the switch off (no value sampled); an int for a float parameter is accepted as a float
    from study.space import initial_trial_params

    d = base()
    d["initial_trials"] = [{"guidance.eta_cycle": 0.0, "guidance.eta_consistency": 0.01, "sample.guidance_scale": 1}]
    spec = parse_spec(d, "smoke.yaml")
    params = initial_trial_params(spec.space, spec.initial_trials[0])
    assert params == {"guidance.eta_cycle:switch": "off", "guidance.eta_consistency:switch": "on",
                      "guidance.eta_consistency": 0.01, "sample.guidance_scale": 1.0}
    assert isinstance(params["sample.guidance_scale"], float)
    assert spec_hash(spec) != spec_hash(parse_spec(base(), "smoke.yaml"))  # part of the frozen spec
    assert "initial_trials" not in yaml.safe_load(dump_spec(parse_spec(base(), "smoke.yaml")))  # old hashes kept


def test_methods_section_tunes_each_method_in_its_own_space():
    # search_spaces/gmm_compare.yaml: tgdp (top-level space) and four methods, each with its own space
    spec = load_spec(ROOT / "search_spaces" / "gmm_compare.yaml")
    assert spec.tuned_methods == ("tgdp", "vanilla", "finetune", "domain_guidance", "tgdp_reg")  # tgdp first
    assert set(spec.space_of("vanilla")) == {"vanilla.lr", "vanilla.steps", "vanilla.width", "vanilla.ema"}
    # a tuned method's trial config: the fixed config with its searched values, nothing of tgdp's space
    _, cfg = spec.resolved_config(10, 3, {"vanilla.lr": 2e-3, "guidance.width": 128}, method="vanilla")
    assert cfg.vanilla.lr == 2e-3 and cfg.guidance.width == spec.resolved_config(10, 3)[1].guidance.width
    assert cfg.vanilla.seed == 3  # the unit seed reaches the method's stage as for tgdp
    # tgdp_reg: the experiment's regularised overrides first, then the trial's values over them
    _, reg = spec.resolved_config(10, 0, {"guidance.eta_cycle": 0.5}, method="tgdp_reg")
    assert (reg.guidance.eta_cycle, reg.guidance.eta_consistency) == (0.5, 0.1)
    # tuned methods are no longer shared stages of the experiment; the untuned ones still are
    from study.experiments import experiment_for
    assert experiment_for(spec).baselines == ("source_only", "oracle_guidance", "oracle_target")
    # a spec without `methods:` dumps and hashes as before the key existed (existing studies resume)
    smoke = load_spec(ROOT / "search_spaces" / "gmm_smoke.yaml")
    from study.spec import spec_dict
    assert "methods" not in spec_dict(smoke) and smoke.tuned_methods == ("tgdp",)
