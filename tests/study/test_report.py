"""study/report.py directly, on study directories built by hand as the runner leaves them (no Ray runtime).

What a finished (or interrupted) study holds and the report reads, written here the way the runner writes it:

- ``spec.yaml`` / ``spec.sha256`` (``study.spec.write_spec``) and ``state.json`` (``StudyPaths.write_state``);
- one Optuna study per unit and tuned method, named ``<study>-<label>`` (``study.paths.run_name`` /
  ``method_label``), its trials asked and told as ``OptunaSearch`` does: the spec's space suggested by
  ``study.search.define_by_run`` on an enqueued point, the user attrs ``tune_trial_id`` (``TaggingOptunaSearch``)
  and ``initial_trial`` (``enqueue_initial_trials``), the last reported validation value told. An ASHA-stopped
  trial is COMPLETE here (with its in-training proxy value) and has no result file, as studies before the PRUNED
  state stored it (tests/study/test_outcomes.py drives the searcher that now tells it PRUNED);
- ``trials/<label>/<tune id>/result.pt`` of each trial that ran to its final evaluation, with the keys of
  ``study.trial.trial_loop``;
- the shared methods' entries in the stage cache under the key the shared loop computes
  (``experiment_for(runtime).baseline_key(method, runtime.data, runtime.base)``, ``study.trial.shared_loop``).

MLflow is replaced by a recorder (``_sync_mlflow``; its own tests are tests/study/test_tracking.py and the end-to-end
ones): these tests are about the tables, the choice of the best trial, ``status`` and ``export_best``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from study import UserError, plots, report
from study.cache import StageCache, atomic_save
from study.experiments import experiment_for
from study.paths import StudyPaths, method_label, run_name
from study.runtime import trial_runtime
from study.space import initial_trial_params
from study.spec import StudySpec, load_spec, parse_spec, read_yaml, write_spec
from tests.study_util import tiny_spec
from tgdp.config import to_dict
from tgdp.metrics import SAMPLE_METRIC_KEYS, failed_metrics

optuna.logging.set_verbosity(optuna.logging.WARNING)

GMM_BASELINES = ("vanilla", "finetune", "domain_guidance", "source_only", "oracle_guidance", "oracle_target")
# a point of gmm_smoke.yaml's space (eta_cycle switched off); trials vary the width and the scale
POINT = {"guidance.eta_cycle": 0.0, "guidance.eta_consistency": 0.01, "guidance.width": 16,
         "sample.guidance_scale": 1.0}


@dataclass
class Trial:
    """One trial as the runner leaves it."""

    value: float | None  # the validation objective Optuna was told (None: never told, see ``state``)
    test: float | None = None  # test-draw energy distance in its result.pt; None: no result file (ASHA-stopped)
    state: str = "COMPLETE"  # COMPLETE, PRUNED, FAIL or RUNNING (asked, never told: the trial still runs)
    point: dict[str, Any] = field(default_factory=lambda: dict(POINT))
    initial: bool = False  # one of the spec's initial trials


@pytest.fixture(autouse=True)
def no_mlflow(monkeypatch):
    """Record the MLflow sync instead of running it (the report's files come first either way)."""
    calls: list[Path] = []
    monkeypatch.setattr(report, "_sync_mlflow", lambda paths, spec, uri, out, figures, **values: calls.append(out))
    return calls


REAL_PLOTS = {"samples_grid": plots.samples_grid, "optuna_plots": plots.optuna_plots}


@pytest.fixture(autouse=True)
def panels(monkeypatch):
    """Record the sample panels instead of drawing them, and skip the Optuna figures (seconds each);
    ``test_report_figures`` draws them for real."""
    seen: list[tuple[str, torch.Tensor, dict]] = []
    monkeypatch.setattr(plots, "samples_grid", lambda p, path: seen.extend(p))
    monkeypatch.setattr(plots, "optuna_plots", lambda study, out, prefix, metric: ([], []))
    return seen


def new_study(tmp_path: Path, name: str = "rep", **changes: Any) -> tuple[StudyPaths, StudySpec]:
    """A study directory as ``run`` creates it before its first unit: gmm_smoke.yaml with ``changes``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = load_spec(tiny_spec(tmp_path, name, **changes))
    paths = StudyPaths((tmp_path / "studies" / name).resolve())
    write_spec(spec, paths)
    paths.make_dirs()
    paths.write_state({"cache_dir": str(paths.cache), "tracking_uri": paths.mlflow_url})
    return paths, spec


def draw_metrics(test_ed: float) -> dict[str, float]:
    """A result's test-draw metrics: every table column, each a different function of the energy distance."""
    return {"energy_distance": test_ed, "sliced_w2": 2 * test_ed, "mean_log_q": -1 - test_ed,
            "mode_balance_error": test_ed / 10, "log_ratio_rmse": 0.5, "guidance_grad_rmse": 1.5,
            "nonfinite_fraction": 0.0, "failed": 0.0}



def add_trials(paths: StudyPaths, spec: StudySpec, n: int, seed: int, label: str, trials: list[Trial],
               method: str = "tgdp") -> list[str]:
    """Ask/tell ``trials`` in the Optuna study of ``method`` in unit ``label``, write their result files;
    returns their Tune trial ids (in order)."""
    from study.search import define_by_run

    run = method_label(label, method)
    space = spec.space_of(method)
    study = optuna.create_study(storage=paths.optuna_url, study_name=run_name(spec, run),
                                directions=list(spec.directions), load_if_exists=True)
    ids = []
    for t in trials:
        study.enqueue_trial(initial_trial_params(space, t.point))
        ot = study.ask()
        config = {**ot.params, **define_by_run(ot, space)}  # the Tune config: params + off values
        tid = f"{run.replace('-', '')}_{ot.number:05d}"
        ot.set_user_attr("tune_trial_id", tid)
        if t.initial:
            ot.set_user_attr("initial_trial", True)
        if t.state == "COMPLETE":
            study.tell(ot, t.value)
        elif t.state in ("PRUNED", "FAIL"):
            study.tell(ot, state=optuna.trial.TrialState[t.state])
        if t.test is not None:
            data_cfg, cfg = spec.resolved_config(n, seed, config, method=method)
            validation = {**draw_metrics(0.0), "energy_distance": t.value}
            atomic_save({"trial_id": tid, "n": n, "seed": seed, "method": method, "params": config,
                         "config": to_dict(cfg), "data": to_dict(data_cfg), "validation": validation,
                         "test": draw_metrics(t.test), "samples": 0.3 * torch.randn(40, 2),
                         "guidance": {"w": torch.zeros(2)}, "rows": [], "epochs": cfg.guidance.epochs,
                         "ratio_grid": None, "experiment": "gmm", "torch_threads": 1},
                        paths.result(run, tid))
        ids.append(tid)
    return ids


def put_baselines(paths: StudyPaths, spec: StudySpec, n: int, seed: int,
                  tests: dict[str, dict[str, float]], samples: dict[str, torch.Tensor] | None = None) -> None:
    """The stage-cache entries of the shared methods ``tests`` names (method -> test metrics), under the key
    the shared loop writes them with; their samples near the modes (inside the figure's window) unless ``samples``
    gives them."""
    rt = trial_runtime(spec, n, seed, cache_dir=str(paths.cache), trials_dir="", train_storage="",
                       classifier_searched=False)
    exp, cache = experiment_for(rt), StageCache(paths.cache)
    for method, test in tests.items():
        key = exp.baseline_key(method, rt.data, rt.base)
        x = (samples or {}).get(method, 0.3 * torch.randn(40, 2))
        cache.put("baseline", key, {"method": method, "n": n, "seed": seed, "validation": test, "test": test,
                                    "samples": x, "data": to_dict(rt.data), "config": to_dict(rt.base), "key": key})


def baseline_ed(method: str, n: int) -> float:
    return 0.1 + GMM_BASELINES.index(method) / 100 + n / 10000


def summary_rows(paths: StudyPaths) -> list[dict[str, str]]:
    return list(csv.DictReader((paths.report / "summary.csv").open()))


def row_of(rows: list[dict[str, str]], method: str, n: int) -> dict[str, str]:
    (row,) = [r for r in rows if r["method"] == method and r["n"] == str(n)]
    return row


# --- the study most tests read ------------------------------------------------------------------------

# unit n10: two finished trials, two ASHA-stopped ones (proxy values at both ends), and a pruned, a failed and a
# still-running one; validation and test ranks disagree, so a report that ranked on the test draw would show it
N10 = [Trial(0.030, test=0.050, initial=True),  # best on validation when maximizing
       Trial(0.020, test=0.060, point={**POINT, "guidance.width": 32}),  # best on validation when minimizing
       Trial(0.001, point={**POINT, "sample.guidance_scale": 0.5}),  # ASHA-stopped: best proxy for minimize
       Trial(0.900, point={**POINT, "sample.guidance_scale": 1.5}),  # ASHA-stopped: best proxy for maximize
       Trial(None, state="PRUNED"), Trial(None, state="FAIL"), Trial(None, state="RUNNING")]
# unit n100: no trial has reached its final evaluation yet
N100 = [Trial(0.004), Trial(0.5)]


def build(tmp_path: Path, direction: str = "minimize", name: str = "rep") -> tuple[StudyPaths, StudySpec, dict]:
    paths, spec = new_study(tmp_path, name, objective={"metric": "energy_distance", "direction": direction},
                            budget={"trials_per_n": 8})
    ids = {10: add_trials(paths, spec, 10, 0, "n10", N10), 100: add_trials(paths, spec, 100, 0, "n100", N100)}
    for n in (10, 100):
        tests = {m: draw_metrics(baseline_ed(m, n)) for m in GMM_BASELINES}
        if n == 10:  # vanilla's draw diverged at n = 10: the failed row of tgdp.metrics.sample_metrics, its
            tests["vanilla"] = failed_metrics(SAMPLE_METRIC_KEYS, 0.5)  # samples far off the figure's window
        put_baselines(paths, spec, n, 0, tests, {"vanilla": torch.full((40, 2), 80.0)} if n == 10 else None)
    paths.done_marker("n10").touch()  # unit n10's Tune run finished
    return paths, spec, ids


@pytest.fixture(scope="module")
def minimized(tmp_path_factory):
    """The study of ``build`` (the tests only read it; ``write_report`` rewrites the same files)."""
    return build(tmp_path_factory.mktemp("minimized"))


def test_report_has_one_row_per_method_and_n_with_the_test_metrics(minimized, no_mlflow, panels):
    paths, spec, ids = minimized
    text = report.write_report(paths.root)
    rows = summary_rows(paths)
    # guards the table's shape: the best tgdp trial (where one finished) and every shared method of the
    # experiment (read from the stage cache under the shared loop's key), once per n, nothing else
    want = [("tgdp (best)", "10")] + [(m, n) for n in ("10", "100") for m in GMM_BASELINES]
    assert sorted((r["method"], r["n"]) for r in rows) == sorted(want)
    # guards that the best row shows the chosen trial's TEST draw (0.060), not its validation value (0.020)
    best = row_of(rows, "tgdp (best)", 10)
    assert best["trial"] == ids[10][1]
    assert float(best["energy_distance"]) == pytest.approx(0.060)
    assert float(best["sliced_w2"]) == pytest.approx(0.120) and float(best["mean_log_q"]) == pytest.approx(-1.06)
    # guards that each baseline row is its own entry's test metrics at its own n (no mix-up of n or method)
    for n in (10, 100):
        for m in GMM_BASELINES:
            if (m, n) != ("vanilla", 10):
                assert float(row_of(rows, m, n)["energy_distance"]) == pytest.approx(baseline_ed(m, n)), (m, n)
    # guards the column set: the experiment's table metrics, then the sample accounting
    assert list(rows[0]) == ["method", "n", "seed", "trial", "energy_distance", "sliced_w2", "mean_log_q",
                             "mode_balance_error", "log_ratio_rmse", "guidance_grad_rmse", "nonfinite_fraction",
                             "failed"]
    # guards that a unit whose trials all stopped early says so instead of showing a best row without a test draw
    assert f"- n100: no trial has finished yet; the best so far, #0 ({ids[100][0]})" in text
    # guards the files and the MLflow hand-off (once, with the report directory)
    md = (paths.report / "summary.md").read_text()
    assert md in text and (paths.report / "trials.csv").is_file()
    assert no_mlflow == [paths.report]
    # guards the comparison figure's panels: one per table row, titled by method, n and the row's test value,
    # with the samples and data config of the chosen trial (not of another trial of the unit)
    # (a NaN row says "failed", as in summary.md)
    assert [title for title, _, _ in panels] == ["TGDP best n=10\ntest energy_distance 0.06"] + [
        f"{m} n={n}\ntest energy_distance {'failed' if (m, n) == ('vanilla', 10) else f'{baseline_ed(m, n):.4g}'}"
        for n in (10, 100) for m in GMM_BASELINES]
    # guards the flag in the text: the panel that shows nothing (vanilla n=10, every sample off the window) is named,
    # no other panel is
    flags = [line for line in text.splitlines() if "outside the comparison figure's window" in line]
    assert flags == ["- vanilla n=10: 100% of its samples are non-finite or outside the comparison figure's "
                     "window (diverged)"]
    chosen = torch.load(paths.result("n10", ids[10][1]), weights_only=True)
    assert torch.equal(panels[0][1], chosen["samples"]) and panels[0][2] == chosen["data"]


def test_report_figures(minimized, monkeypatch):
    paths, _, _ = minimized
    for name, fn in REAL_PLOTS.items():
        monkeypatch.setattr(plots, name, fn)
    report.write_report(paths.root)
    # guards that the figures are drawn from what the report read: the comparison panels, the Optuna history and
    # parallel coordinates of each unit's study; no parameter importances from 4 complete trials, and the
    # report says why
    names = {p.name for p in paths.report.glob("*.png")}
    assert names >= {"samples_grid.png", "n10_history.png", "n10_parallel.png", "n100_history.png"}, names
    assert not any("importances" in x for x in names)
    md = (paths.report / "summary.md").read_text()
    assert "- n10: no parameter-importance plot: 4 complete trial(s), and importances from fewer than 10" in md


def test_trials_csv_lists_every_trial_with_its_state(minimized):
    paths, _, ids = minimized
    report.write_report(paths.root)
    rows = list(csv.DictReader((paths.report / "trials.csv").open()))
    # guards that every Optuna trial of every unit is listed, with its state and Tune id (none is dropped)
    assert sorted((r["n"], r["state"]) for r in rows) == sorted(
        [("10", "COMPLETE")] * 4 + [("10", s) for s in ("PRUNED", "FAIL", "RUNNING")] + [("100", "COMPLETE")] * 2)
    assert [r["tune_trial_id"] for r in rows if r["n"] == "10"] == ids[10]
    # guards the initial-trial flag and the searched params (an off switch as Optuna stores it)
    first = rows[0]
    assert first["initial"] == "True" and all(r["initial"] == "False" for r in rows[1:])
    assert first["param.guidance.eta_cycle:switch"] == "off" and first["param.guidance.width"] == "16"


def test_a_failed_row_prints_failed(minimized):
    paths, _, _ = minimized
    report.write_report(paths.root)
    md = (paths.report / "summary.md").read_text()
    (line,) = [x for x in md.splitlines() if x.startswith("| vanilla | 10 |")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    # guards the sample accounting in the table: NaN metrics of a failed draw read "failed", not "nan"; a
    # metric the row does not have stays empty; the accounting columns show the fraction and the flag
    assert cells == ["vanilla", "10", "0", "", "failed", "failed", "failed", "failed", "", "", "0.5", "1"]
    # guards that a non-failed row with the same columns prints numbers (the "failed" is per row)
    (ok,) = [x for x in md.splitlines() if x.startswith("| finetune | 10 |")]
    assert "failed" not in ok and "nan" not in ok
    # guards that summary.csv keeps the NaN (machine-readable) and both accounting columns
    row = row_of(summary_rows(paths), "vanilla", 10)
    assert math.isnan(float(row["energy_distance"])) and row["failed"] == "1.0" and row["nonfinite_fraction"] == "0.5"


def test_the_best_trial_follows_the_direction(minimized, tmp_path):
    maximized = build(tmp_path, "maximize", "rmax")  # the same trials, the objective maximized
    for (paths, spec, ids), want in ((minimized, 1), (maximized, 0)):
        study = optuna.load_study(study_name=f"{spec.name}-n10", storage=paths.optuna_url)
        # guards the selection on the validation value in the spec's direction (min: 0.020, max: 0.030), and
        # that the ASHA-stopped trials never win while a finished one exists (their proxies 0.001 and 0.900
        # would win in either direction)
        b = report.best_trial(study, spec, report._finished(paths, "n10"))
        assert b.number == want, (spec.directions, b.number)
        report.write_report(paths.root)
        # guards that the report shows the trial best_trial chose
        assert row_of(summary_rows(paths), "tgdp (best)", 10)["trial"] == ids[10][want]


def test_best_trial_never_ranks_a_trial_that_did_not_complete(tmp_path):
    paths, spec = new_study(tmp_path, budget={"trials_per_n": 8})
    add_trials(paths, spec, 10, 0, "n10", [Trial(None, state="PRUNED"), Trial(None, state="FAIL"),
                                           Trial(None, state="RUNNING"), Trial(0.5, test=0.5)])
    study = optuna.load_study(study_name="rep-n10", storage=paths.optuna_url)
    # guards that pruned, failed and running trials are never candidates (the only complete one is #3)
    assert report.best_trial(study, spec, report._finished(paths, "n10")).number == 3
    assert report.best_trial(study, spec).number == 3
    # guards that a study with no complete trial has no best
    empty = optuna.create_study(storage=paths.optuna_url, study_name="rep-empty", directions=["minimize"])
    empty.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    assert report.best_trial(empty, spec) is None


def test_status_counts_states_and_names_the_best(minimized):
    paths, _, ids = minimized
    text = report.status(paths.root)
    lines = text.splitlines()
    # guards the header: study name and objective
    assert lines[0].startswith("study rep  (") and lines[1] == "objective: minimize energy_distance"
    # guards the outcomes against the budget (a COMPLETE trial without a result file, as older studies stored an
    # ASHA stop, counts as stopped early), and the DONE marker shown for the finished unit only
    assert "  n10:  2 finished, 3 stopped early, 1 failed, 1 running (of 8)  [done]" in lines
    assert "  n100: 0 finished, 2 stopped early, 0 failed (of 8)" in lines
    # guards the best so far: the finished trial #1 at n10 (not the stopped #2 with 0.001) ...
    (b10,) = [x for x in lines if x.startswith("    best: trial #") and ids[10][1] in x]
    assert b10.startswith(f"    best: trial #1 ({ids[10][1]}) energy_distance=0.02  params ")
    # ... and, where none finished, the best proxy (status shows progress; the report shows no row for it)
    assert any(x.startswith(f"    best: trial #0 ({ids[100][0]}) energy_distance=0.004") for x in lines)


def test_status_of_a_study_that_has_not_started(tmp_path):
    paths, _ = new_study(tmp_path)
    # guards that status reads a fresh study directory (no optuna.db yet) without failing
    assert report.status(paths.root).splitlines()[2:] == ["  n10:  not started", "  n100: not started"]


def test_mlflow_failure_keeps_the_report(minimized, monkeypatch):
    paths, _, _ = minimized

    def down(*args, **kwargs):
        raise ConnectionError("tracking server down")

    monkeypatch.setattr(report, "_sync_mlflow", down)
    text = report.write_report(paths.root)
    # guards the documented order: the files are the report; MLflow is retried by the next `report`
    assert (paths.report / "summary.csv").is_file() and (paths.report / "summary.md").is_file()
    assert "(MLflow not updated: tracking server down;" in text


def test_a_tuned_baseline_gets_a_best_row_instead_of_its_shared_row(tmp_path):
    vanilla = {"space": {"vanilla.lr": {"kind": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True}}}
    paths, spec = new_study(tmp_path, factors={"n": [10], "seeds": [0]}, methods={"vanilla": vanilla})
    add_trials(paths, spec, 10, 0, "n10", [Trial(0.02, test=0.03)])
    vids = add_trials(paths, spec, 10, 0, "n10", [Trial(0.04, test=0.07, point={"vanilla.lr": 0.005}),
                                                  Trial(0.03, test=0.08, point={"vanilla.lr": 0.002})],
                      method="vanilla")
    shared = [m for m in GMM_BASELINES if m != "vanilla"]
    put_baselines(paths, spec, 10, 0, {m: draw_metrics(baseline_ed(m, 10)) for m in shared})
    report.write_report(paths.root)
    rows = summary_rows(paths)
    # guards one row per method: the tuned vanilla's best trial replaces its shared row (ranked within vanilla
    # on validation: 0.03 beats 0.04; shown on the test draw: 0.08)
    assert sorted(r["method"] for r in rows) == sorted(["tgdp (best)", "vanilla (best)", *shared])
    v = row_of(rows, "vanilla (best)", 10)
    assert v["trial"] == vids[1] and float(v["energy_distance"]) == pytest.approx(0.08)
    # guards export_best for a tuned baseline: its best params in `fixed`, a spec `run` accepts
    exported = parse_spec(read_yaml(report.export_best(paths.root, 10, method="vanilla"), "<best>"))
    assert exported.fixed["vanilla"]["lr"] == pytest.approx(0.002) and exported.methods is None


# --- export_best -----------------------------------------------------------------------------------------

def test_export_best_writes_a_spec_that_reruns_the_best_trial(minimized, tmp_path):
    paths, spec, _ = minimized
    out = tmp_path / "exported" / "best.yaml"
    assert report.export_best(paths.root, 10, out) == f"wrote {out}"
    exported = parse_spec(read_yaml(out.read_text(), str(out)), str(out))
    # guards that the file is a spec `run` accepts, for one unit, one trial, nothing searched
    assert exported.space == {} and exported.initial_trials is None and exported.budget.trials_per_n == 1
    assert (exported.factors.n, exported.factors.seeds) == ((10,), (0,))
    assert exported.name == "rep-best-n10"
    # guards the best params (trial #1: width 32, eta_cycle switched off, eta_consistency 0.01) in `fixed`
    best = optuna.load_study(study_name="rep-n10", storage=paths.optuna_url).trials[1]
    assert exported.fixed["guidance"]["width"] == 32 and exported.fixed["guidance"]["eta_cycle"] == 0.0
    assert exported.fixed["guidance"]["eta_consistency"] == pytest.approx(0.01)
    # guards the whole point: the exported spec resolves to exactly the best trial's config
    assert exported.resolved_config(10, 0) == spec.resolved_config(10, 0, best.params)
    # without --out the text itself is returned (and is the same spec)
    assert parse_spec(read_yaml(report.export_best(paths.root, 10), "<best>")) == exported


def test_export_best_refuses_what_it_cannot_export(minimized, tmp_path):
    paths, _, _ = minimized
    # guards the messages of the three refusals (each a UserError: exit 2 at the CLI)
    with pytest.raises(UserError, match=r"n=50 is not a target size of study rep; allowed: \[10, 100\]"):
        report.export_best(paths.root, 50)
    with pytest.raises(UserError, match="--method vanilla: not tuned in study rep; allowed: tgdp"):
        report.export_best(paths.root, 10, method="vanilla")
    fresh, _ = new_study(tmp_path / "fresh", "fresh")
    with pytest.raises(UserError, match="no finished trial for n=10"):
        report.export_best(fresh.root, 10)


def test_export_best_with_a_grid_sampler_and_initial_trials(tmp_path):
    space = {"guidance.width": {"kind": "categorical", "choices": [16, 32]},
             "sample.guidance_scale": {"kind": "float", "low": 0.5, "high": 1.5, "step": 0.5}}
    paths, spec = new_study(tmp_path, space=space, sampler="grid", budget={"trials_per_n": 6})
    point = {"guidance.width": 32, "sample.guidance_scale": 1.5}
    add_trials(paths, spec, 10, 0, "n10", [Trial(0.02, test=0.03, point=point)])
    exported = parse_spec(read_yaml(report.export_best(paths.root, 10), "<best>"))
    # guards that a valid grid study exports (an empty space has no grid: the export samples at random)
    assert exported.sampler == "random" and exported.fixed["guidance"]["width"] == 32
    assert exported.fixed["sample"]["guidance_scale"] == 1.5

    paths, spec = new_study(tmp_path / "init", "init", initial_trials=[POINT], budget={"trials_per_n": 2})
    add_trials(paths, spec, 10, 0, "n10", [Trial(0.02, test=0.03, initial=True)])
    # guards that the initial trials (points of the searched space) do not make the exported spec invalid
    assert parse_spec(read_yaml(report.export_best(paths.root, 10), "<best>")).initial_trials is None


def test_export_best_when_the_best_trial_trains_fewer_epochs_than_the_grace_period(tmp_path):
    paths, spec = new_study(tmp_path, space={"guidance.epochs": {"kind": "int", "low": 1, "high": 4}},
                            early_stopping={"grace_period": 3, "max_epochs": None})
    add_trials(paths, spec, 10, 0, "n10", [Trial(0.02, test=0.03, point={"guidance.epochs": 1}),
                                           Trial(0.05, test=0.04, point={"guidance.epochs": 4})])
    exported = parse_spec(read_yaml(report.export_best(paths.root, 10), "<best>"))
    # the best trial (1 epoch) is what the exported spec runs
    assert exported.fixed["guidance"]["epochs"] == 1


def test_export_best_never_picks_a_stopped_trial_over_a_finished_one_of_another_seed(tmp_path):
    paths, spec = new_study(tmp_path, factors={"n": [10], "seeds": [0, 1]})
    add_trials(paths, spec, 10, 0, "n10-s0", [Trial(0.001, point={**POINT, "guidance.width": 16})])  # stopped
    add_trials(paths, spec, 10, 1, "n10-s1", [Trial(0.010, test=0.02, point={**POINT, "guidance.width": 32})])
    exported = parse_spec(read_yaml(report.export_best(paths.root, 10), "<best>"))
    # the only trial with a final evaluation is seed 1's
    assert exported.factors.seeds == (1,) and exported.fixed["guidance"]["width"] == 32


def test_export_best_refuses_when_only_stopped_trials_exist(minimized):
    paths, _, _ = minimized
    with pytest.raises(UserError, match="no finished trial for n=100"):
        report.export_best(paths.root, 100)
