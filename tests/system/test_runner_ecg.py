"""An ECG study end to end on local Ray (num_cpus=2), real Optuna and MLflow: the real PTB-XL / CPSC2018
subset (search_spaces/ecg_real_subset.yaml at micro sizes) when it is present, else the fixtures in
tests/data/ecg; and the ``tgdp-study ecg`` command."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from study.cli import main
from study.spec import load_spec
from tests.study_util import ROOT, by_kind, optuna_trials, runs

pytestmark = pytest.mark.ray

FIXTURES = ROOT / "tests" / "data" / "ecg"
REAL_SUBSET = Path(os.environ.get("TGDP_REAL_ECG_DIR") or ROOT.parent / "shared" / "data" / "real_ecg")


def ecg_spec(tmp_path: Path, name: str) -> tuple[Path, list[int]]:
    """ecg_real_subset.yaml at micro sizes (seconds per stage), written to tmp_path; its target sizes."""
    d = yaml.safe_load((ROOT / "search_spaces" / "ecg_real_subset.yaml").read_text())
    d["name"] = name
    if (REAL_SUBSET / "ptbxl").is_dir() and (REAL_SUBSET / "cpsc2018").is_dir():
        d["data"].update(source_root=str(REAL_SUBSET / "ptbxl"), target_root=str(REAL_SUBSET / "cpsc2018"),
                         val=12, test=12)  # 59 target records: 12 + 12 held out, n from the rest
        ns = [10]  # one unit keeps the test near a minute on 2 busy cores (~45 s of it is Ray Train start-up)
    else:  # 3 PTB-XL and 3 CPSC records: 1 / 1 / 1 (one test record: macro_auroc etc. are NaN, feat_* finite)
        d["data"].update(source_root=str(FIXTURES / "ptbxl"), target_root=str(FIXTURES / "cpsc2018"), val=1, test=1)
        ns = [1]
    d["factors"] = {"n": ns, "seeds": [0]}
    small = {"width": 4, "depth": 1, "steps": 3, "batch_size": 4, "report_every": 3, "conditional": True}
    d["fixed"] = {
        "source": {"arch": "sssd", **small},
        "classifier": {"arch": "cnn", **small},
        "time_classifier": {"arch": "cnn", **small},
        "guidance": {"arch": "cnn", "width": 4, "depth": 1, "epochs": 2, "batch_size": 4, "target_batch_size": 4,
                     "conditional": True},
        "vanilla": {"arch": "sssd", **small},
        "finetune": {"arch": "sssd", **small, "steps": 2, "lr": 1.0e-4},
        "sample": {"steps": 2, "num_samples": 4, "batch_size": 4},
    }
    d["evaluation"] = {"epochs": 1, "width": 4, "stages": 1, "batch_size": 8, "bootstrap_reps": 5}
    d["budget"] = {"trials_per_n": 2}
    d["early_stopping"] = {"enabled": True, "grace_period": 1, "reduction_factor": 2, "max_epochs": 2}
    d["resources"] = {"workers_per_trial": 0, "cpus_per_trial": 1, "max_concurrent_trials": 1, "num_cpus": 2}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p, ns



def test_ecg_study_end_to_end(local_ray, tmp_path, capsys):
    """run -> report -> MLflow for the ECG experiment: parents per n, a child per trial, baselines, table."""
    import torch

    from study.runner import run_study

    path, ns = ecg_spec(tmp_path, "ecg-e2e")
    spec = load_spec(path)
    study = tmp_path / "studies" / "ecg-e2e"
    t0 = time.time()
    assert run_study(spec, study, None, None) == 0
    print(f"ECG study wall time {time.time() - t0:.1f} s")
    out = capsys.readouterr().out
    # every trial and the shared stages mapped one preprocessed entry per data set (tgdp.data.ecg_cache)
    cache = Path(os.environ.get("TGDP_STUDY_CACHE_DIR") or study / "cache") / "ecg-data"
    assert sorted(p.name.split("-")[0] for p in cache.iterdir() if p.is_dir()) == ["cpsc2018", "ptbxl"]
    uri = f"sqlite:///{study / 'mlflow.db'}"
    rs = runs(uri, "ecg-e2e")
    assert not [(r.info.run_name, r.info.status) for r in rs if r.info.status != "FINISHED"]  # nothing RUNNING
    parents = by_kind(rs, "n")
    assert sorted(r.info.run_name for r in parents) == sorted(f"n{n}" for n in ns)  # one parent per n
    trials = by_kind(rs, "trial")
    assert len(trials) == 2 * len(ns)
    assert all(r.data.tags["mlflow.parentRunId"] in {p.info.run_id for p in parents} for r in trials)
    for r in trials:  # the resolved config, the data config, the evaluation and the searched params
        assert {"guidance.width", "sample.num_samples", "data.target_root", "evaluation.epochs",
                "param.sample.guidance_scale"} <= set(r.data.params)
    real = ns != [1]  # the real subset (else the 3-record fixtures: NaN utility metrics are not logged)
    finished = [r for r in trials if r.data.tags.get("finalized") == "true"]
    assert len(finished) >= len(ns)  # ASHA never stops the first trial of a unit
    for r in finished:
        for m in ("val_macro_auroc", "val_f_beta2", "val_g_beta2", "val_feat_energy", "val_feat_frechet"):
            assert m in r.data.metrics or not (real or m.startswith("val_feat")), m
        assert "val_feat_energy" in r.data.metrics  # the per-epoch proxy
    baselines = by_kind(rs, "baseline")
    assert sorted(r.data.tags["method"] for r in baselines) == sorted(
        ["real_only", "vanilla", "finetune", "domain_guidance", "source_only"] * len(ns))
    assert all("test_feat_energy" in r.data.metrics and "val_feat_energy" in r.data.metrics for r in baselines)
    assert not real or all("test_macro_auroc" in r.data.metrics and "val_macro_auroc" in r.data.metrics
                           for r in baselines)
    assert len(by_kind(rs, "summary")) == 1
    # Optuna: one study per n; trials COMPLETE (final evaluation) or PRUNED (stopped on the proxy)
    for n in ns:
        ts = optuna_trials(study, f"ecg-e2e-n{n}")
        assert len(ts) == 2 and {t.state.name for t in ts} <= ({"COMPLETE", "PRUNED"} if real else
                                                             {"COMPLETE", "PRUNED", "FAIL"})  # NaN: FAIL
        done = [t for t in ts if t.state.name == "COMPLETE"]
        assert not real or (done and all(0.0 <= t.value <= 1.0 for t in done))
    # results: the trial ran with one torch thread, selection on validation, report on test
    for res_path in (study / "trials").glob("*/*/result.pt"):
        res = torch.load(res_path, map_location="cpu", weights_only=True)
        assert res["experiment"] == "ecg" and res["torch_threads"] == 1
        assert res["samples"].shape == (4, 8, 1000)
        assert {"macro_auroc", "feat_energy", "logr_source"} <= set(res["validation"]) & set(res["test"])
    # the report table: method x metric x n on the test split
    csv = (study / "report" / "summary.csv").read_text()
    assert csv.splitlines()[0].startswith("method,n,seed,trial,macro_auroc,")
    for method in ("tgdp (best)",) * real + ("real_only", "vanilla", "finetune", "domain_guidance", "source_only"):
        assert csv.count(method + ",") == len(ns), method
    assert "| macro_auroc |" in out or "macro_auroc" in out  # the report is printed
    # the stage cache: one source model for every n
    cached = sorted(p.name.split("-")[0] for p in (study / "cache").glob("*.pt"))
    assert cached.count("source") == 1 and cached.count("baseline") == 5 * len(ns)  # real_only .. source_only
    assert main(["status", str(study)]) == 0
    # evaluate maps the study's preprocessed records (the study cache; no trial runtime there): removed, they are
    # built again in the study cache, not read past it
    import shutil

    shutil.rmtree(cache)
    assert main(["evaluate", str(study), "--seeds", "100", "--out", str(tmp_path / "eval")]) == 0
    assert sorted({p.name.split("-")[0] for p in cache.iterdir() if p.is_dir()}) == ["cpsc2018", "ptbxl"]
    assert len(list((tmp_path / "eval" / "results").glob("s100-*.json"))) == 7 * len(ns)  # tgdp .. real_only


def test_unknown_experiment_is_refused_before_anything_is_written(tmp_path):
    from study import UserError
    from study.experiments import EXPERIMENTS
    from study.runner import run_study

    spec = load_spec(ecg_spec(tmp_path, "refused")[0])
    saved = EXPERIMENTS.pop("ecg")
    try:
        with pytest.raises(UserError, match="allowed: gmm"):
            run_study(spec, tmp_path / "studies" / "refused")
    finally:
        EXPERIMENTS["ecg"] = saved
    assert not (tmp_path / "studies").exists()


def test_ecg_cli_command(tmp_path, capsys):
    """`tgdp-study ecg` runs study.programs.ecg through study.cli (simulated records, micro preset)."""
    out = tmp_path / "out"
    code = main(["ecg", "--sim", "--preset", "micro", "--sim-dir", str(tmp_path / "sim"), "--sim-source-records", "16",
                 "--sim-target-records", "24", "--n", "4", "--val", "6", "--test", "6", "--methods", "real_only",
                 "--threads", "1", "--out", str(out)])
    assert code == 0
    rows = json.loads((out / "ecg_results.json").read_text())["rows"]
    assert [(r["method"], r["n"]) for r in rows] == [("real_only", 4)]
    assert "| 4 | real_only |" in capsys.readouterr().out
    assert main(["ecg", "--source", str(tmp_path)]) == 2  # --source without --target: a user error
    assert "needs --target" in capsys.readouterr().err
