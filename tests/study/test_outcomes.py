"""Early stops are PRUNED (study.search.TaggingOptunaSearch on a real Optuna study) and what status and
trials.csv make of them (study.outcomes). No Ray runtime: the searcher is driven as Tune drives it."""

from __future__ import annotations

import csv

import optuna
import pytest

from study import report
from study.outcomes import counts_line, short_params
from study.search import make_search
from tests.study.test_report import draw_metrics, new_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _run_trial(search, tid: str, values: list[float], final: bool) -> None:
    """Tune's calls for one trial: suggest, one result per guidance epoch, then complete with the last one."""
    assert search.suggest(tid) is not None
    for epoch, v in enumerate(values, 1):
        result = {"epoch": epoch, "energy_distance": v, "training_iteration": epoch}
        search.on_trial_result(tid, result)
    search.on_trial_complete(tid, {**result, **({"final": 1.0} if final else {})})


def _write_result(paths, spec, tid: str, test_ed: float) -> None:
    """The result file a finished trial leaves (the keys the report reads)."""
    import torch

    from study.cache import atomic_save
    from tgdp.config import to_dict

    data_cfg, cfg = spec.resolved_config(10, 0)
    atomic_save({"trial_id": tid, "validation": draw_metrics(0.12), "test": draw_metrics(test_ed),
                 "samples": torch.randn(40, 2), "data": to_dict(data_cfg), "config": to_dict(cfg)},
                paths.result("n10", tid))


@pytest.fixture
def searched(tmp_path):
    """Unit n10 searched by the study's own searcher: two trials stopped early (epochs 1 and 2), one finished;
    unit n100 with one stopped trial only."""
    paths, spec = new_study(tmp_path, "prn", budget={"trials_per_n": 3})
    search = make_search(spec, "n10", paths)
    _run_trial(search, "a", [0.30], final=False)
    _run_trial(search, "b", [0.20, 0.15, 0.12], final=True)
    _run_trial(search, "c", [0.25, 0.22], final=False)
    _write_result(paths, spec, "b", test_ed=0.13)
    other = make_search(spec, "n100", paths)
    _run_trial(other, "d", [0.40], final=False)
    return paths, spec


def test_a_stopped_trial_is_pruned_with_its_last_value_as_intermediate(searched):
    paths, spec = searched
    ts = optuna.load_study(study_name="prn-n10", storage=paths.optuna_url).trials
    # guards the state: stopped trials PRUNED (TPE does not take them as final), the finished one COMPLETE
    assert [t.state.name for t in ts] == ["PRUNED", "COMPLETE", "PRUNED"]
    # guards that the in-training values stay intermediate values, the last one the stop value
    assert ts[2].intermediate_values == {1: 0.25, 2: 0.22} and ts[2].values == [0.22]
    assert ts[0].user_attrs["stop_epoch"] == 1 and ts[2].user_attrs["stop_epoch"] == 2
    assert ts[1].values == [0.12] and "stop_epoch" not in ts[1].user_attrs
    # guards best_trial: the COMPLETE trial wins over a PRUNED one with a lower value ...
    study = optuna.load_study(study_name="prn-n10", storage=paths.optuna_url)
    assert report.best_trial(study, spec).number == 1
    # ... a unit with stopped trials only shows the best of them, except where finished ones are required
    only_stopped = optuna.load_study(study_name="prn-n100", storage=paths.optuna_url)
    assert report.best_trial(only_stopped, spec).number == 0
    assert report.best_trial(only_stopped, spec, strict=True, finished=lambda t: True) is None


def test_status_prints_a_compact_table_of_outcomes(searched):
    paths, _ = searched
    lines = report.status(paths.root).splitlines()
    # guards the per-unit table: finished, stopped early with the epoch range, failed, against the budget
    assert "  n10:  1 finished, 2 stopped early (epoch 1-2), 0 failed (of 3)" in lines, lines
    assert "  n100: 0 finished, 1 stopped early (epoch 1), 0 failed (of 3)" in lines, lines
    # guards the parameters: 4 significant digits and no ":switch" pseudo-parameters
    best = next(x for x in lines if x.startswith("    best: trial #1"))
    numbers = [tok for tok in best.replace(",", " ").replace("=", " ").split() if tok[:1].isdigit()]
    assert ":switch" not in best and all(len(tok.rstrip(")")) <= 9 for tok in numbers), best


def test_trials_csv_has_outcome_stop_epoch_duration_and_test_value(searched, monkeypatch):
    from study import plots

    paths, _ = searched
    monkeypatch.setattr(report, "_sync_mlflow", lambda *a, **k: None)
    monkeypatch.setattr(plots, "optuna_plots", lambda *a: ([], []))
    monkeypatch.setattr(plots, "samples_grid", lambda *a: None)
    report.write_report(paths.root)
    rows = list(csv.DictReader((paths.report / "trials.csv").open()))
    got = [(r["n"], r["state"], r["outcome"], r["stop_epoch"], r["test_energy_distance"]) for r in rows]
    # guards the new columns: the outcome words of status, the stop epoch of stopped trials and the test-draw
    # value of the finished one only (a stopped trial has no test draw)
    assert got == [("10", "PRUNED", "stopped early", "1", ""), ("10", "COMPLETE", "finished", "", "0.13"),
                   ("10", "PRUNED", "stopped early", "2", ""), ("100", "PRUNED", "stopped early", "1", "")], got
    # guards the duration: told trials have one (seconds, from Optuna's start and end times)
    assert all(float(r["duration_s"]) >= 0 for r in rows)


def test_counts_line_and_short_params_words():
    # guards the words of the table with nothing stopped (no epoch range) and with running trials
    class T:
        def __init__(self, state):
            self.state, self.user_attrs, self.last_step = optuna.trial.TrialState[state], {}, None

    trials = [T("COMPLETE"), T("FAIL"), T("RUNNING"), T("RUNNING")]
    assert counts_line(trials, lambda t: True) == "1 finished, 0 stopped early, 1 failed, 2 running"
    # guards the parameter display: an off switch as path=off, floats at 4 significant digits
    shown = short_params({"guidance.eta_cycle:switch": "off", "guidance.width": 16,
                          "sample.guidance_scale": 1.2345678901234})
    assert shown == "guidance.eta_cycle=off, guidance.width=16, sample.guidance_scale=1.235"
    tune_config = {"a:switch": "off", "a": 0.0, "b:switch": "on", "b": 0.123456}
    assert short_params(tune_config) == "a=off, b=0.1235"
