"""study/tracking.py + study/trial_records.py against a real MLflow sqlite store: finalising a trial's run."""

from __future__ import annotations

import pytest
import torch

from study.paths import StudyPaths
from study.spec import load_spec
from study.tracking import Tracker
from study.trial_records import TrialRecords, resolved_params
from tests.study_util import SMOKE, artifacts, by_kind, runs
from tgdp.config import to_dict

PARAMS = {"guidance.eta_cycle:switch": "off", "guidance.eta_cycle": 0.0, "guidance.eta_consistency:switch": "on",
          "guidance.eta_consistency": 0.02, "guidance.width": 16, "sample.guidance_scale": 1.25}


@pytest.fixture()
def records(tmp_path) -> TrialRecords:
    spec = load_spec(SMOKE)
    paths = StudyPaths((tmp_path / spec.name).resolve())
    paths.make_dirs()
    tracker = Tracker(paths.mlflow_url, spec.name, paths.artifact_location)
    rec = TrialRecords(tracker, paths, spec)
    rec.parent("n10")
    return rec


def write_result(rec: TrialRecords, trial_id: str) -> None:
    data_cfg, cfg = rec.spec.resolved_config(10, 0, PARAMS)
    path = rec.paths.result("n10", trial_id)
    path.parent.mkdir(parents=True)
    torch.save({"trial_id": trial_id, "n": 10, "seed": 0, "params": PARAMS, "config": to_dict(cfg),
                "data": to_dict(data_cfg), "validation": {"energy_distance": 0.05, "sliced_w2": 0.1},
                "test": {"energy_distance": 0.06}, "samples": torch.randn(50, 2),
                "guidance": {"w": torch.zeros(3)}, "rows": [{"stage": "classifier", "epoch": 20, "loss": 0.6}],
                "epochs": 2, "ratio_grid": None, "experiment": "gmm", "torch_threads": 1}, path)


def trial_runs(rec: TrialRecords):
    return by_kind(runs(rec.tracker.uri, rec.spec.name), "trial")


def test_finalize_logs_the_result_and_terminates_the_run(records):
    write_result(records, "t_00000")
    records.trial_run("n10", "t_00000", PARAMS)  # the callback opened it when the trial started
    assert [r.info.status for r in trial_runs(records)] == ["RUNNING"]
    records.finalize("n10", "t_00000", PARAMS, {"epoch": 3, "final": 1.0}, "FINISHED")
    (run,) = trial_runs(records)
    assert run.info.status == "FINISHED"
    assert run.data.tags["finalized"] == "true" and run.data.tags["stopped_early"] == "false"
    assert run.data.tags["mlflow.parentRunId"] == records.parents["n10"]
    # the final validation and test metrics at step epochs + 1 (val_* continues the per-epoch history), stage
    # rows by their epoch; one name per metric, no final_/last_ copies
    assert run.data.metrics["val_energy_distance"] == pytest.approx(0.05)
    assert run.data.metrics["test_energy_distance"] == pytest.approx(0.06)
    assert run.data.metrics["classifier_loss"] == pytest.approx(0.6)
    assert not any(k.startswith(("final_", "last_")) for k in run.data.metrics), run.data.metrics
    hist = records.tracker.client.get_metric_history(run.info.run_id, "val_energy_distance")
    assert [m.step for m in hist] == [3]
    assert run.info.run_name == "n10-s0-t_00000-tgdp"  # no optuna.db here: the Tune id stands in for the number
    # params: the searched values and the whole resolved config they give
    assert run.data.params["param.guidance.eta_consistency"] == "0.02"
    assert run.data.params["guidance.eta_consistency"] == "0.02" and run.data.params["guidance.width"] == "16"
    assert run.data.params["data.m"] == "2000" and run.data.params["guidance.eta_cycle"] == "0.0"
    arts = set(artifacts(records.tracker.uri, run.info.run_id))
    assert {"plots/samples.png", "checkpoint/guidance.pt", "spec.yaml"} <= arts


def test_finalize_is_idempotent(records):
    write_result(records, "t_00001")
    for _ in range(3):  # the callback, the end-of-unit reconciliation and `report` may all finalise it
        records.finalize("n10", "t_00001", PARAMS, None, "FINISHED")
    (run,) = trial_runs(records)  # one run, never duplicated
    hist = records.tracker.client.get_metric_history(run.info.run_id, "val_energy_distance")
    assert len(hist) == 1  # logged once: a finalised run is not logged again
    assert run.info.status == "FINISHED"
    # `report` finalises from the files alone (no Tune config): the same run, still complete
    again = TrialRecords(Tracker(records.tracker.uri, records.spec.name, records.paths.artifact_location),
                         records.paths, records.spec)
    again.parent("n10")
    again.finalize("n10", "t_00001", None, None, "FINISHED")
    assert len(trial_runs(records)) == 1 and len(runs(records.tracker.uri, records.spec.name)) == 2  # + parent


def test_a_trial_without_result_ends_stopped_early_or_failed(records):
    last = {"epoch": 1, "energy_distance": 0.3, "loss_guidance": 0.1, "pid": 123, "time_this_iter_s": 2.0}
    for _ in range(2):  # the callback, then the end-of-unit reconciliation
        records.finalize("n10", "t_00002", PARAMS, last, "FINISHED")
    records.finalize("n10", "t_00003", PARAMS, None, "FAILED")
    got = {r.data.tags["trial_id"]: r for r in trial_runs(records)}
    early = got["t_00002"]
    assert early.info.status == "FINISHED" and early.data.tags["stopped_early"] == "true"
    assert "finalized" not in early.data.tags and "test_energy_distance" not in early.data.metrics
    # its last report under the per-epoch names, once; Ray's bookkeeping is no metric
    assert set(early.data.metrics) == {"val_energy_distance", "guidance_loss_guidance"}
    hist = records.tracker.client.get_metric_history(early.info.run_id, "val_energy_distance")
    assert [(m.step, m.value) for m in hist] == [(1, pytest.approx(0.3))]
    assert got["t_00003"].info.status == "FAILED" and got["t_00003"].data.tags["stopped_early"] == "false"


def test_close_running_after_a_crash(records):
    records.trial_run("n10", "t_00004", PARAMS)
    assert records.tracker.close_running("KILLED") == 2  # the parent and the trial were RUNNING
    assert {r.info.status for r in runs(records.tracker.uri, records.spec.name)} == {"KILLED"}


def test_resolved_params_flatten_the_whole_config():
    spec = load_spec(SMOKE)
    flat = resolved_params(spec, 100, 2, PARAMS)
    assert flat["guidance.eta_consistency"] == 0.02 and flat["guidance.seed"] == 2 and flat["data.n"] == 100
    assert flat["source.steps"] == 400  # fixed
    assert not any(k.startswith("evaluation.") for k in flat)  # gmm_smoke has no evaluation section


def test_no_experiment_keeps_artefacts_under_the_working_directory(tmp_path, monkeypatch):
    """MLflow's Default experiment of a new store would put its artefacts at <cwd>/mlruns: the study's instead."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    spec = load_spec(SMOKE)
    paths = StudyPaths((tmp_path / spec.name).resolve())
    paths.make_dirs()
    tracker = Tracker(paths.mlflow_url, spec.name, paths.artifact_location)
    TrialRecords(tracker, paths, spec).parent("n10")
    for exp in tracker.client.search_experiments():  # "Default" and the study's
        assert exp.artifact_location.startswith(paths.artifact_location), (exp.name, exp.artifact_location)
    assert not (cwd / "mlruns").exists() and list(cwd.iterdir()) == []
