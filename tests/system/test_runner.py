"""The study system end to end on local Ray (num_cpus=2), real Optuna and MLflow (sqlite)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study.cli import main
from study.spec import load_spec
from tests.study_util import artifacts, by_kind, optuna_trials, runs, tiny_spec

pytestmark = pytest.mark.ray
SCRIPT = Path(sys.executable).with_name("tgdp-study")



def test_smoke_study_end_to_end(local_ray, tmp_path, capsys):
    """run -> report -> MLflow: runs, params, metrics, artefacts; status, best; nothing RUNNING."""
    from study.runner import run_study

    point = {"guidance.eta_cycle": 0.0, "guidance.width": 16, "sample.guidance_scale": 1.25}
    spec = load_spec(tiny_spec(tmp_path, "e2e", initial_trials=[point]))
    study = tmp_path / "studies" / "e2e"
    t0 = time.time()
    assert run_study(spec, study, None, None) == 0
    print(f"smoke study wall time {time.time() - t0:.1f} s")
    uri = f"sqlite:///{study / 'mlflow.db'}"
    rs = runs(uri, "e2e")
    # no run is left RUNNING (trials, baselines, parents, summary)
    assert all(r.info.status == "FINISHED" for r in rs), [(r.info.run_name, r.info.status) for r in rs]
    parents = by_kind(rs, "n")
    assert sorted(r.info.run_name for r in parents) == ["n10", "n100"]  # one parent per n
    trials = by_kind(rs, "trial")
    assert len(trials) == 4  # 2 trials per n, one child run each
    parent_ids = {r.info.run_id for r in parents}
    assert all(r.data.tags["mlflow.parentRunId"] in parent_ids for r in trials)
    assert len(by_kind(rs, "baseline")) == 12  # 6 baselines/oracles x 2 n
    assert len(by_kind(rs, "summary")) == 1
    early = [r for r in trials if r.data.tags.get("stopped_early") == "true"]
    assert all("test_energy_distance" not in r.data.metrics for r in early)  # ASHA-stopped: no final eval
    t = next(r for r in trials if r.data.tags.get("finalized") == "true")
    # params: the whole resolved config flattened, the data config and the searched params
    for r in trials:  # every trial, early-stopped or not
        assert {"guidance.width", "classifier.lr", "sample.num_samples", "data.m", "param.guidance.width"} <= \
            set(r.data.params)
    assert "test_energy_distance" in t.data.metrics and "val_log_ratio_rmse" in t.data.metrics
    from mlflow.tracking import MlflowClient
    hist = MlflowClient(uri).get_metric_history(t.info.run_id, "val_energy_distance")
    assert sorted({m.step for m in hist}) == [1, 2, 3]  # by guidance epoch, then the final evaluation
    assert {"plots/samples.png", "plots/log_ratio_field.png", "checkpoint/guidance.pt", "spec.yaml"} <= \
        set(artifacts(uri, t.info.run_id))
    summary = by_kind(rs, "summary")[0]
    arts = set(artifacts(uri, summary.info.run_id))
    assert {"report/summary.csv", "report/summary.md", "figures/samples_grid.png", "figures/n10_history.png"} <= arts
    # the report table: method x metric x n on the test draw
    csv = (study / "report" / "summary.csv").read_text()
    for method in ("tgdp (best)", "vanilla", "finetune", "domain_guidance", "source_only", "oracle_guidance",
                   "oracle_target"):
        assert csv.count(method) == 2, method
    # Optuna: one study per n, every trial complete, tagged with its Tune trial id
    for n in (10, 100):
        ts = optuna_trials(study, f"e2e-n{n}")
        # finished trials COMPLETE; one ASHA stopped PRUNED (never COMPLETE: TPE would take its value as final)
        stopped = {r.data.tags["trial_id"] for r in early}
        assert [x.state.name for x in ts] == ["PRUNED" if x.user_attrs["tune_trial_id"] in stopped else "COMPLETE"
                                              for x in ts]
        assert ts[0].state.name == "COMPLETE"  # the initial trial is never stopped
        assert all(x.user_attrs.get("tune_trial_id") for x in ts)
        # the initial trial ran first, with its values (the off value as a switched-off parameter)
        assert [x.user_attrs.get("initial_trial", False) for x in ts] == [True, False]
        assert ts[0].params["guidance.eta_cycle:switch"] == "off" and "guidance.eta_cycle" not in ts[0].params
        assert (ts[0].params["guidance.width"], ts[0].params["sample.guidance_scale"]) == (16, 1.25)
    import csv as _csv
    rows = list(_csv.DictReader((study / "report" / "trials.csv").open()))
    assert sorted(r["initial"] for r in rows) == ["False", "False", "True", "True"]  # one per n, marked
    # stage cache: one source model for both n, classifier per n, 6 baselines per n
    cached = sorted(p.name.split("-")[0] for p in (study / "cache").glob("*.pt"))
    assert cached.count("source") == 1 and cached.count("classifier") == 2 and cached.count("baseline") == 12
    capsys.readouterr()
    # status and best from the files only
    assert main(["status", str(study)]) == 0
    assert re.search(r"n10:\s+\d finished, \d stopped early.*, 0 failed \(of 2\)", capsys.readouterr().out)
    out = tmp_path / "best.yaml"
    assert main(["best", str(study), "--n", "10", "--out", str(out)]) == 0
    best = load_spec(out)  # `run` accepts it
    assert best.space == {} and best.budget.trials_per_n == 1 and best.factors.n == (10,)
    # a second report does not duplicate runs
    assert main(["report", str(study)]) == 0
    assert len(runs(uri, "e2e")) == len(rs)
    # a second driver on the same study is refused while the lock is held
    from study import UserError
    from study.paths import StudyPaths
    from study.runner import study_lock
    with study_lock(StudyPaths(study)):
        with pytest.raises(UserError, match="in use by another process"):
            with study_lock(StudyPaths(study)):
                pass


def test_best_without_finished_trials_exits_2(tmp_path, capsys):
    from study.paths import StudyPaths
    from study.spec import write_spec

    spec = load_spec(tiny_spec(tmp_path, "empty"))
    write_spec(spec, StudyPaths(tmp_path / "empty"))
    assert main(["best", str(tmp_path / "empty"), "--n", "10"]) == 2
    assert "no finished trial" in capsys.readouterr().err


@pytest.mark.slow
def test_driver_sigkill_then_resume(tmp_path):
    """SIGKILL the driver after the first trial finished; `resume` keeps it and completes the rest."""
    spec = tiny_spec(tmp_path, "kill", factors={"n": [10]}, budget={"trials_per_n": 3},
                     initial_trials=[{"guidance.width": 16}],
                     resources={"workers_per_trial": 0, "cpus_per_trial": 1, "max_concurrent_trials": 1,
                                "num_cpus": 2})
    study = tmp_path / "studies" / "kill"
    env = dict(os.environ)  # token authentication as tests.study_util set it
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen([str(SCRIPT), "run", str(spec), "--dir", str(tmp_path / "studies")], stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not list((study / "trials" / "n10").glob("*/result.pt")) and time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            time.sleep(0.5)
        assert list((study / "trials" / "n10").glob("*/result.pt")), "no trial finished in time"
        time.sleep(2)  # let the second trial start: the kill then interrupts a running trial
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # Ray processes the killed driver had started
        except ProcessLookupError:
            pass
    first = {p.parent.name for p in (study / "trials" / "n10").glob("*/result.pt")}
    r = subprocess.run([str(SCRIPT), "resume", str(study)], capture_output=True, text=True, env=env, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ts = optuna_trials(study, "kill-n10")
    complete = [t for t in ts if t.state.name in ("COMPLETE", "PRUNED")]  # finished or stopped early
    assert len(complete) == 3, [(t.number, t.state.name) for t in ts]  # the budget is met
    assert first <= {t.user_attrs["tune_trial_id"] for t in complete}  # the pre-kill trial is kept
    assert sum(t.user_attrs.get("initial_trial", False) for t in ts) == 1  # the resume did not queue it again
    assert not [t for t in ts if t.state.name == "RUNNING"]
    uri = f"sqlite:///{study / 'mlflow.db'}"
    rs = runs(uri, "kill")
    assert not [r.info.run_name for r in rs if r.info.status == "RUNNING"]
    trial_runs = by_kind(rs, "trial")
    assert len({r.data.tags["trial_id"] for r in trial_runs}) == len(trial_runs)  # no duplicated runs
    assert {t.user_attrs["tune_trial_id"] for t in complete} <= {r.data.tags["trial_id"] for r in trial_runs}
    assert len(by_kind(rs, "summary")) == 1
    rows = (study / "report" / "trials.csv").read_text().splitlines()[1:]
    assert sum("COMPLETE" in row or "PRUNED" in row for row in rows) == 3  # the summary covers every trial


def test_time_budget_ends_the_unit_and_asha_stops_a_weak_trial(local_ray, tmp_path, capsys):
    """budget.time_budget_s ends a unit of 500 trials early; ASHA stops trials whose guidance scale (60)
    wrecks their samples at the first rung. Nothing is left RUNNING and the report covers the unit."""
    from study.runner import run_study

    spec = load_spec(tiny_spec(
        tmp_path, "budget", factors={"n": [10], "seeds": [0]}, sampler="random",
        fixed={"guidance": {"width": 16, "depth": 2, "epochs": 3, "batch_size": 512}},
        space={"sample.guidance_scale": {"kind": "categorical", "choices": [1.0, 60.0]}},
        # the first trial pays the trial process's start and imports, which took over 40 s on the loaded 2-core
        # box (then 1 trial ran); later trials reuse the process and take seconds
        budget={"trials_per_n": 500, "time_budget_s": 75},
        early_stopping={"enabled": True, "grace_period": 1, "reduction_factor": 2, "max_epochs": 3}))
    study = tmp_path / "studies" / "budget"
    t0 = time.time()
    assert run_study(spec, study, None, None) == 0
    print(f"budget study wall time {time.time() - t0:.1f} s")
    ts = optuna_trials(study, "budget-n10")
    assert not [t.number for t in ts if t.state.name == "RUNNING"]
    assert 3 <= len(ts) < 500, len(ts)  # the budget, not the trial count, ended the unit
    rs = runs(f"sqlite:///{study / 'mlflow.db'}", "budget")
    assert all(r.info.status != "RUNNING" for r in rs), [(r.info.run_name, r.info.status) for r in rs]
    trials = by_kind(rs, "trial")
    stopped = [r for r in trials if r.data.tags.get("stopped_early") == "true"]
    # ASHA may also stop the weaker half of the scale-1 trials; a scale-60 trial must be among the stopped
    # (the seeded random sampler starts 60, 1, 60, ...: the third trial meets a better one at the first rung)
    scales = [(r.data.params.get("param.sample.guidance_scale"), r.data.tags.get("stopped_early")) for r in trials]
    assert any(r.data.params["param.sample.guidance_scale"] == "60.0" for r in stopped), scales
    assert all("test_energy_distance" not in r.data.metrics for r in stopped)
    assert "tgdp (best)" in (study / "report" / "summary.csv").read_text()


def test_asha_never_stops_an_initial_trial_but_still_ranks_it():
    # The measured case: the initial trial reaches the epoch-4 rung 0.00007 behind another trial. Plain ASHA
    # (reduction factor 2) stops it; the study's scheduler keeps it, and a weaker non-initial trial is still stopped.
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler

    from study.search import KeepInitialTrialsASHA

    def run(scheduler) -> list[str]:
        trials = [Trial("t", config={"guidance.lr": lr}, stub=True) for lr in (0.004, 0.002, 0.001)]
        for t in trials:
            scheduler.on_trial_add(None, t)
        return [scheduler.on_trial_result(None, t, {"epoch": 4, "ed": ed})
                for t, ed in zip(trials, (0.0025, 0.00257, 0.003))]

    kw = dict(time_attr="epoch", metric="ed", mode="min", max_t=21, grace_period=4, reduction_factor=2)
    assert run(ASHAScheduler(**kw)) == ["CONTINUE", "STOP", "STOP"]
    assert run(KeepInitialTrialsASHA([{"guidance.lr": 0.002}], **kw)) == ["CONTINUE", "CONTINUE", "STOP"]


def test_best_trial_prefers_trials_that_finished():
    # An ASHA-stopped trial's value is an in-training proxy and it has no test-draw result: it wins only when
    # no trial finished (a real Optuna study).
    import optuna

    from study.report import best_trial

    spec = load_spec(Path(__file__).resolve().parents[2] / "search_spaces" / "gmm_smoke.yaml")
    study = optuna.create_study(direction="minimize")
    for value in (0.0026, 0.0144, 0.03):
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}))
    finished = {1, 2}
    assert best_trial(study, spec).number == 0
    assert best_trial(study, spec, lambda t: t.number in finished).number == 1
    assert best_trial(study, spec, lambda t: False).number == 0
