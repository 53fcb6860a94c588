"""The ECG experiment: task loading (tgdp/ecg_task.py: splits, normalisation), every method end to end
(tgdp/ecg_methods.py), the `tgdp-study ecg` program (study/programs/ecg.py), specs."""

from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from study import SpecError
from study.experiments import get_experiment
from study.spec import load_spec, parse_spec, read_yaml
from tgdp.config import from_dict
from tgdp.data.ecg import TARGET_CLASSES, fit_lead_norm
from tgdp.ecg_eval import utility_eval
from study.programs.ecg import main
from tgdp.ecg_config import ECGDataConfig
from tgdp.ecg_methods import ALL_METHODS, ECG_METRICS, run_ecg_methods, utility_scores
from tgdp.ecg_task import PRESETS, UTILITY_PRESETS, check_ecg_config, load_ecg_task

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "data" / "ecg"
SPECS = ["ecg_sim", "ecg_real_subset", "ecg_paper"]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sim_cfg(tmp_path_factory) -> ECGDataConfig:
    """40 simulated source and 40 target records, written once per module (the cache dir is tmp)."""
    return ECGDataConfig(simulate=True, sim_dir=str(tmp_path_factory.mktemp("sim")), sim_source_records=40,
                         sim_target_records=40, n=10, val=8, test=8, seed=3)


@pytest.fixture(scope="module")
def sim_task(sim_cfg):
    return load_ecg_task(sim_cfg)


# --- load_ecg_task ---------------------------------------------------------------------------------------

def test_sim_task_shapes_labels_and_disjoint_splits(sim_task):
    d = sim_task.data
    # The stages' data dict: 8 model leads x 1000 samples, the 9 CPSC classes as multi-hot floats.
    assert d["source_x"].shape == (40, 8, 1000) and d["source_y"].shape == (40, len(TARGET_CLASSES))
    assert d["target_x"].shape == (10, 8, 1000) and d["target_y"].shape == (10, 9)
    assert sim_task.val_x.shape == (8, 8, 1000) and sim_task.test_x.shape == (8, 8, 1000)
    for y in (d["source_y"], d["target_y"], sim_task.val_y, sim_task.test_y):
        assert set(y.unique().tolist()) <= {0.0, 1.0}
    # Limited set, validation and test are pairwise disjoint target rows (no leakage into evaluation).
    tr, va, te = map(set, (sim_task.split.train, sim_task.split.val, sim_task.split.test))
    assert len(tr) == 10 and len(va) == 8 and len(te) == 8
    assert not (tr & va) and not (tr & te) and not (va & te)
    # The normalised target rows are the raw rows of the split, normalised (the mV copy matches).
    torch.testing.assert_close(sim_task.norm.apply(sim_task.mv("val")), sim_task.val_x)


def test_experiment_keeps_records_in_the_cache_dir_it_is_given(sim_cfg, sim_task, tmp_path, monkeypatch):
    # `evaluate` hands the study's stage cache to the experiment (no trial runtime there): the records are
    # preprocessed into it once and mapped after; without a cache directory nothing is written anywhere.
    monkeypatch.delenv("TGDP_STUDY_CACHE_DIR", raising=False)
    spec = parse_spec(read_yaml((ROOT / "search_spaces" / "ecg_sim.yaml").read_text()))
    task, _ = get_experiment("ecg", spec).load(sim_cfg)
    assert not list(tmp_path.iterdir())
    exp = get_experiment("ecg", spec, cache_dir=str(tmp_path))
    task, data = exp.load(sim_cfg)
    assert sorted({p.name.split("-")[0] for p in (tmp_path / "ecg-data").iterdir()}) == ["cpsc2018", "ptbxl"]
    torch.testing.assert_close(data["source_x"], sim_task.data["source_x"])
    torch.testing.assert_close(task.test_x, sim_task.test_x)


def test_normalisation_is_fitted_on_source_training_records_only(sim_task):
    src = sim_task.source
    expected = fit_lead_norm(src.x, src.lengths)
    # Exactly the source fit: no target record (limited, val or test) enters the statistics.
    assert sim_task.norm.mean == pytest.approx(expected.mean) and sim_task.norm.std == pytest.approx(expected.std)
    with_target = fit_lead_norm(torch.cat([src.x, sim_task.target.x]))
    assert sim_task.norm.std != pytest.approx(with_target.std, rel=1e-3)
    # So the normalised source is standardised per lead, the (shifted) target is not exactly.
    x = sim_task.data["source_x"]
    torch.testing.assert_close(x.mean(dim=(0, 2)), torch.zeros(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2)), torch.ones(8), atol=1e-2, rtol=0)


def test_split_is_seeded_and_held_out_rows_do_not_depend_on_n(sim_cfg, sim_task):
    again = load_ecg_task(sim_cfg)
    assert again.split == sim_task.split  # same seed -> same rows
    other_n = load_ecg_task(replace(sim_cfg, n=4))
    assert other_n.split.val == sim_task.split.val and other_n.split.test == sim_task.split.test
    assert len(other_n.split.train) == 4


def test_real_fixtures_load(tmp_path):
    cfg = ECGDataConfig(source_root=str(FIXTURES / "ptbxl"), target_root=str(FIXTURES / "cpsc2018"),
                        n=1, val=1, test=1)
    task = load_ecg_task(cfg)
    # 3 real PTB-XL records (100 Hz file or the 500 Hz fallback), 3 CPSC records split 1 / 1 / 1.
    assert task.data["source_x"].shape == (3, 8, 1000) and task.data["target_x"].shape == (1, 8, 1000)
    assert task.val_x.shape == (1, 8, 1000) and task.test_x.shape == (1, 8, 1000)
    assert task.data["target_y"].shape[1] == 9 and torch.isfinite(task.data["source_x"]).all()
    ids = [task.target.record_ids[i] for i in (*task.split.train, *task.split.val, *task.split.test)]
    assert sorted(ids) == ["A0002", "A0003", "A0010"]  # every target record used once


@pytest.mark.parametrize("kw, key", [({"n": 0}, "n"), ({"n": 1.5}, "n"), ({"val": -0.1}, "val"),
                                     ({"sim_target_records": 0}, "sim_target_records"),
                                     ({"simulate": False}, "source_root")])
def test_data_config_errors_name_the_key(kw, key):
    with pytest.raises(ValueError, match=rf"^{key}: "):
        ECGDataConfig(**{"simulate": True, **kw})


# --- methods -----------------------------------------------------------------------------------------------

def test_every_method_end_to_end_gives_finite_metrics(sim_cfg, sim_task):
    samples: dict[str, torch.Tensor] = {}
    rows = run_ecg_methods(sim_cfg, PRESETS["micro"], "cpu", methods=ALL_METHODS, utility=UTILITY_PRESETS["micro"],
                           task=sim_task, samples_out=samples)
    assert [r["method"] for r in rows] == list(ALL_METHODS)
    for r in rows:
        for key in ECG_METRICS + ("macro_auroc_lo", "macro_auroc_hi", "val_macro_auroc"):
            assert math.isfinite(r[key]), (r["method"], key)
        assert r["n"] == 10
    # Generated records come back in mV with the generation labels' count (micro preset: 4 each).
    assert set(samples) == set(ALL_METHODS) - {"real_only"}
    assert all(x.shape == (4, 8, 1000) and torch.isfinite(x).all() for x in samples.values())
    by = {r["method"]: r for r in rows}
    # tgdp runs without regularisers, tgdp_reg with them; both report the ratio diagnostics.
    assert by["tgdp"]["eta_cycle"] == 0 and by["tgdp_reg"]["eta_cycle"] > 0 and by["tgdp_reg"]["eta_consistency"] > 0
    assert math.isfinite(by["tgdp"]["logr_target_val"]) and by["real_only"]["n_generated"] == 0


def test_conditional_version_is_required():
    cfg = PRESETS["micro"]
    with pytest.raises(ValueError, match="conditional"):
        check_ecg_config(replace(cfg, guidance=replace(cfg.guidance, conditional=False)))


def test_utility_scores_equal_utility_eval(sim_task):
    # One classifier scored on several splits must give utility_eval's numbers for the same split.
    cfg = UTILITY_PRESETS["micro"]
    x, y = sim_task.mv("train"), sim_task.data["target_y"]
    ours = utility_scores(x, y, {"": (sim_task.mv("test"), sim_task.test_y)}, cfg, torch.device("cpu"))
    ref = utility_eval(x, y, sim_task.mv("test"), sim_task.test_y, cfg)
    assert ours["macro_auroc"] == pytest.approx(ref["auroc"]) and ours["f_beta2"] == pytest.approx(ref["f_beta2"])


def test_cli_writes_csv_markdown_json(tmp_path):
    out = tmp_path / "out"
    code = main(["--sim", "--preset", "micro", "--sim-dir", str(tmp_path / "sim"), "--sim-source-records", "20",
                 "--sim-target-records", "30", "--n", "5", "--val", "6", "--test", "6", "--methods", "real_only",
                 "tgdp", "--out", str(out)])
    assert code == 0
    rows = json.loads((out / "ecg_results.json").read_text())["rows"]
    assert [(r["method"], r["n"]) for r in rows] == [("real_only", 5), ("tgdp", 5)]
    assert "| 5 | tgdp |" in (out / "ecg_results.md").read_text()
    assert (out / "ecg_results.csv").read_text().startswith("method,n,")


# --- specs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SPECS)
def test_ecg_specs_load_and_resolve(name):
    spec = load_spec(ROOT / "search_spaces" / f"{name}.yaml")
    data_cfg, cfg = spec.resolved_config(spec.factors.n[0], spec.factors.seeds[0])
    assert isinstance(data_cfg, ECGDataConfig) and data_cfg.n == spec.factors.n[0]
    check_ecg_config(cfg)  # the fixed section sets the conditional version everywhere
    assert cfg.source.arch == "sssd" and cfg.guidance.arch == "cnn"
    assert spec.metrics == ["macro_auroc"]


@pytest.mark.parametrize("name", SPECS)
def test_ecg_specs_dry_run_exit_0(name):
    # The console script validates the spec (data via ECGDataConfig) and prints the plan; creates nothing.
    res = subprocess.run([str(ROOT / ".venv" / "bin" / "tgdp-study"), "run", f"search_spaces/{name}.yaml", "--dry-run",
                          "--dir", "/nonexistent-studies"], cwd=ROOT, env=dict(os.environ),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "experiment: ecg" in res.stdout and "macro_auroc" in res.stdout
    assert not Path("/nonexistent-studies").exists()


def _ecg_doc(**data):
    doc = read_yaml((ROOT / "search_spaces" / "ecg_sim.yaml").read_text())
    doc["data"] = {**doc["data"], **data}
    return doc


def test_bad_ecg_data_key_is_a_specific_spec_error():
    with pytest.raises(SpecError) as err:
        parse_spec(_ecg_doc(sim_recrods=10), "bad.yaml")
    (issue,) = err.value.issues
    assert issue.path == "data" and "unknown key" in issue.problem and "sim_target_records" in issue.allowed
    assert "sim_recrods" in str(err.value)


@pytest.mark.parametrize("data, path", [({"n": 5}, "data.n"), ({"sim_target_records": 0}, "data.sim_target_records"),
                                        ({"val": "lots"}, "data.val"), ({"simulate": "yes"}, "data.simulate")])
def test_bad_ecg_data_values_name_their_key(data, path):
    with pytest.raises(SpecError) as err:
        parse_spec(_ecg_doc(**data), "bad.yaml")
    assert [i.path for i in err.value.issues] == [path]


def test_ecg_experiment_entry_lists_the_metrics():
    assert tuple(get_experiment("ecg").metrics) == ECG_METRICS
    assert from_dict(ECGDataConfig, {"simulate": True}) == get_experiment("ecg").data_config({"simulate": True}, 10, 0)



@pytest.mark.parametrize("name", ["gmm", "ecg"])
def test_adapters_rebuild_a_cached_gaussian_skip_source(name):
    # guards the trial's restore path: each adapter rebuilds the source net with the stage's own builder and
    # the task's schedule, so a spec with source.gaussian_skip loads the cached weights (the GMM adapter once
    # built the bare net) and the skip keeps the sigma_t it was trained with (once always the default schedule's)
    from study.experiments import EXPERIMENTS
    from tgdp import stages
    from tgdp.config import GMMConfig, TGDPConfig
    from tgdp.data.gmm import GMMTask
    from tgdp.schedules import VPSchedule

    base = PRESETS["micro"] if name == "ecg" else TGDPConfig()
    cfg = replace(base, source=replace(base.source, gaussian_skip=True))
    task = GMMTask(GMMConfig(m=8, n=4), VPSchedule(beta_max=10.0))
    data = task.draw() if name == "gmm" else {"source_x": torch.zeros(4, 8, 1000),
                                              "source_y": torch.zeros(4, len(TARGET_CLASSES))}
    labels = data["source_y"].shape[1] if cfg.source.conditional else 0
    built = stages.build_score(cfg.source, tuple(data["source_x"].shape[1:]), labels, task.schedule).eval()
    rebuilt = EXPERIMENTS[name](spec=None).source_net(cfg, task, data, built.state_dict())
    x, t = torch.randn(2, *data["source_x"].shape[1:]), torch.full((2,), 0.5)
    y = data["source_y"][:2] if labels else None
    torch.testing.assert_close(rebuilt(x, t, y), built(x, t, y))
