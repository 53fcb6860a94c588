"""Several tuned methods in one study (``methods:``), and the protocol command ``evaluate`` on it.

One module-scoped tiny study (gmm_smoke budgets, n = 10, dev seed 0) tunes tgdp and vanilla with 2 trials each
on local Ray, real Optuna and MLflow; the tests read it: its Optuna studies, its report, then ``evaluate`` on
evaluation seeds (in-process torch, no Ray).
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from pathlib import Path

import pytest

from study.cli import main
from study.spec import load_spec
from tests.study_util import artifacts, by_kind, optuna_trials, runs, tiny_spec

pytestmark = pytest.mark.ray

VANILLA = {"space": {"vanilla.lr": {"kind": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
                     "vanilla.steps": {"kind": "int", "low": 20, "high": 60, "step": 20}}}


@pytest.fixture(scope="module")
def compare_study(local_ray, tmp_path_factory) -> Path:
    """A finished study tuning tgdp (the top-level space) and vanilla (``methods:``), 2 trials each."""
    from study.runner import run_study

    tmp = tmp_path_factory.mktemp("compare")
    spec = load_spec(tiny_spec(tmp, "cmp", factors={"n": [10], "seeds": [0]}, methods={"vanilla": VANILLA}))
    study = tmp / "studies" / "cmp"
    t0 = time.time()
    cwd = tmp / "cwd"  # an empty working directory: test_nothing_is_written_to_the_working_directory
    cwd.mkdir()
    before = os.getcwd()
    os.chdir(cwd)
    try:
        assert run_study(spec, study, None, None) == 0
    finally:
        os.chdir(before)
    print(f"compare study wall time {time.time() - t0:.1f} s")
    return study


def test_two_tuned_methods_each_get_their_own_optuna_study_and_best_row(compare_study: Path):
    study = compare_study
    # tgdp keeps the unit's own study name (existing studies resume); vanilla has <study>-<label>-<method>
    for name in ("cmp-n10", "cmp-n10-vanilla"):
        ts = optuna_trials(study, name)
        # the same budget: 2 trials each, finished or (tgdp only: vanilla reports once, FIFO) stopped early
        assert len(ts) == 2 and {t.state.name for t in ts} <= {"COMPLETE", "PRUNED"}, name
        assert name == "cmp-n10" or {t.state.name for t in ts} == {"COMPLETE"}
    vanilla = optuna_trials(study, "cmp-n10-vanilla")
    # vanilla's trials searched vanilla's space, nothing of tgdp's
    assert all(set(t.params) == {"vanilla.lr", "vanilla.steps"} for t in vanilla)
    # one DONE marker per (unit, method): resume skips each finished Tune run on its own
    assert (study / "trials" / "n10" / "DONE").is_file() and (study / "trials" / "n10-vanilla" / "DONE").is_file()
    csv = (study / "report" / "summary.csv").read_text().splitlines()
    methods = [row.split(",")[0] for row in csv[1:]]
    # a best row per tuned method, and the fixed baselines without vanilla (it is tuned, not a shared stage)
    assert methods.count("tgdp (best)") == 1 and methods.count("vanilla (best)") == 1, methods
    assert "vanilla" not in methods and "finetune" in methods and "oracle_target" in methods, methods
    # no shared vanilla entry in the stage cache: its trials fit it
    entries = [json.dumps(p.name) for p in (study / "cache").glob("baseline-*.pt")]
    assert len(entries) == 5, entries  # finetune, domain_guidance, source_only, oracle_guidance, oracle_target
    uri = f"sqlite:///{study / 'mlflow.db'}"
    rs = runs(uri, "cmp")
    trials = by_kind(rs, "trial")
    assert len(trials) == 4 and all(r.info.status == "FINISHED" for r in trials)  # 2 + 2 child runs, finished
    # the vanilla trials' runs carry the method and its resolved config, under the unit's parent run
    vr = [r for r in trials if r.data.params.get("method") == "vanilla"]
    assert len(vr) == 2 and all("val_energy_distance" in r.data.metrics for r in vr)
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {by_kind(rs, "n")[0].info.run_id}


def test_best_exports_a_tuned_baseline(compare_study: Path, tmp_path: Path):
    out = tmp_path / "best.yaml"
    assert main(["best", str(compare_study), "--n", "10", "--method", "vanilla", "--out", str(out)]) == 0
    best = load_spec(out)
    b = min((t for t in optuna_trials(compare_study, "cmp-n10-vanilla")), key=lambda t: t.values[0])
    # the best vanilla trial's values are frozen into `fixed`; the exported spec tunes nothing else
    assert best.fixed["vanilla"]["lr"] == pytest.approx(b.params["vanilla.lr"]) and best.methods is None


def test_evaluate_refuses_development_seeds_and_writes_nothing(compare_study: Path, capsys):
    before = sorted(p.relative_to(compare_study) for p in compare_study.rglob("*"))
    capsys.readouterr()
    assert main(["evaluate", str(compare_study), "--seeds", "0-1"]) == 2  # seed 0 is the study's dev seed
    err = capsys.readouterr().err
    assert "evaluation seeds [0] are development seeds of study cmp" in err  # a specific message, no traceback
    assert "Traceback" not in err
    # nothing was written: no evaluation directory, not a file more in the study
    assert sorted(p.relative_to(compare_study) for p in compare_study.rglob("*")) == before


def test_evaluate_writes_the_final_table_resumes_and_reproduces_from_frozen(compare_study: Path, tmp_path: Path, capsys):
    out = tmp_path / "eval"
    t0 = time.time()
    # two seeds in parallel processes (--jobs 2); the resume below runs them in-process
    assert main(["evaluate", str(compare_study), "--seeds", "100,101", "--out", str(out), "--jobs", "2"]) == 0
    print(f"evaluate wall time {time.time() - t0:.1f} s")
    methods = ["tgdp", "vanilla", "tgdp_reg", "finetune", "domain_guidance", "source_only", "oracle_guidance",
               "oracle_target"]
    files = sorted(p.name for p in (out / "results").glob("*.json"))
    # one result per (evaluation seed, n, method): every method of the experiment, both seeds
    assert files == sorted(f"s{s}-n10-{m}.json" for s in (100, 101) for m in methods)
    frozen = json.loads((out / "frozen.json").read_text())
    best = min(optuna_trials(compare_study, "cmp-n10-vanilla"), key=lambda t: t.values[0])
    # vanilla runs its best trial's config, frozen on the development seed's validation draw
    assert frozen["vanilla"]["10"]["params"] == best.params and frozen["vanilla"]["10"]["dev_seed"] == 0
    row = json.loads((out / "results" / "s100-n10-vanilla.json").read_text())
    assert row["params"] == best.params and "energy_distance" in row["test"]  # scored on the test draw
    table = json.loads((out / "table.json").read_text())
    assert table["evaluation_seeds"] == [100, 101] and table["methods"] == methods
    metrics = {c["metric"] for c in table["comparisons"]}
    assert metrics == {"energy_distance", "mode_balance_error"}  # the objective and the mode-weight error
    c = next(c for c in table["comparisons"] if c["metric"] == "energy_distance")
    assert {m["method"]: m["seeds"] for m in c["methods"]} == {m: 2 for m in methods}  # 2 seeds per method
    assert len(c["pairs"]) == len(methods) * (len(methods) - 1) // 2  # every pair compared
    md = (out / "table.md").read_text()
    assert "## energy_distance" in md and "| 10 | vanilla | 2 |" in md  # the rendered table names method and seeds
    # resume: a rerun skips every finished result (their files are not rewritten)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    (out / "results" / "s101-n10-oracle_target.json").unlink()  # one result lost: only it is recomputed
    capsys.readouterr()
    assert main(["evaluate", str(compare_study), "--seeds", "100,101", "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert log.count("[evaluate] seed") == 1 and "seed 101 n=10 oracle_target" in log  # only the missing one ran
    after = {p.name: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    assert {k: v for k, v in after.items() if k != "s101-n10-oracle_target.json"} == \
        {k: v for k, v in mtimes.items() if k != "s101-n10-oracle_target.json"}
    # without the study: its spec and frozen.json reproduce the results (stages retrained in a fresh cache;
    # equal up to float noise of another torch thread count)
    again = tmp_path / "again"
    assert main(["evaluate", str(compare_study / "spec.yaml"), "--frozen", str(out / "frozen.json"), "--seeds", "100",
                 "--out", str(again)]) == 0
    redone = sorted((again / "results").glob("*.json"))
    assert [p.name for p in redone] == sorted(f"s100-n10-{m}.json" for m in methods)
    for p in redone:
        first = json.loads((out / "results" / p.name).read_text())
        assert json.loads(p.read_text())["test"] == pytest.approx(first["test"], rel=1e-3), p.name
    assert json.loads((again / "frozen.json").read_text()) == frozen


def test_nothing_is_written_to_the_working_directory(compare_study: Path):
    # guards "no artefacts under the working directory": MLflow's Default experiment would use <cwd>/mlruns
    cwd = compare_study.parent.parent / "cwd"
    assert not (cwd / "mlruns").exists() and sorted(p.name for p in cwd.iterdir()) == []


def test_mlflow_run_names_and_metric_scheme(compare_study: Path):
    import torch
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{compare_study / 'mlflow.db'}"
    client = MlflowClient(uri)
    rs = runs(uri, "cmp")
    numbers = {t.user_attrs["tune_trial_id"]: (t.number, "tgdp" if name == "cmp-n10" else "vanilla")
               for name in ("cmp-n10", "cmp-n10-vanilla") for t in optuna_trials(compare_study, name)}
    trials, baselines = by_kind(rs, "trial"), by_kind(rs, "baseline")
    # run names people can read: the unit label, n-seed-trial number-method, n-seed-method
    assert [r.info.run_name for r in by_kind(rs, "n")] == ["n10"]
    assert sorted(r.info.run_name for r in trials) == sorted(
        f"n10-s0-t{number:02d}-{method}" for number, method in numbers.values())
    for r in trials:  # the number is the Optuna trial of that Tune trial, not a count of runs
        number, method = numbers[r.data.tags["trial_id"]]
        assert r.info.run_name == f"n10-s0-t{number:02d}-{method}"
    assert sorted(r.info.run_name for r in baselines) == sorted(
        f"n10-s0-{m}" for m in ("finetune", "domain_guidance", "source_only", "oracle_guidance", "oracle_target"))
    # no Ray bookkeeping and no final_/last_ copies on any run
    ray_keys = re.compile(r"(^|_)(pid|timestamp|time_this_iter_s|time_total_s|training_iteration|"
                          r"time_since_restore|iterations_since_restore|done)$|^(final|last)_")
    assert not [(r.info.run_name, k) for r in rs for k in r.data.metrics if ray_keys.search(k)]
    # trials and baselines share val_/test_ columns; a finished trial has its test draw, as in its result.pt
    assert all({"val_energy_distance", "test_energy_distance"} <= set(r.data.metrics) for r in baselines)
    finished = [r for r in trials if r.data.tags.get("finalized") == "true"]
    assert {numbers[r.data.tags["trial_id"]][1] for r in finished} == {"tgdp", "vanilla"}
    for r in finished:
        label = "n10" if r.data.params.get("method", "tgdp") == "tgdp" else "n10-vanilla"
        res = torch.load(compare_study / "trials" / label / r.data.tags["trial_id"] / "result.pt", weights_only=True)
        assert r.data.metrics["test_energy_distance"] == pytest.approx(res["test"]["energy_distance"])
        assert r.data.metrics["val_energy_distance"] == pytest.approx(res["validation"]["energy_distance"])
        # val_* by epoch: each guidance epoch, then the final evaluation at epochs + 1 (a tuned baseline: once)
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_energy_distance")]
        assert sorted(steps) == list(range(1, res["epochs"] + 2)), (r.info.run_name, steps)
    assert all("test_energy_distance" not in r.data.metrics for r in trials if r not in finished)
    # the best value per n: on the parent run, and on the summary run at step n (with each baseline's)
    best = next(row for row in csv.DictReader((compare_study / "report" / "summary.csv").open())
                if row["method"] == "tgdp (best)")
    parent = by_kind(rs, "n")[0]
    assert parent.data.metrics["best_tgdp_test_energy_distance"] == pytest.approx(float(best["energy_distance"]))
    assert "best_vanilla_val_energy_distance" in parent.data.metrics
    summary = by_kind(rs, "summary")[0]
    for name in ("best_tgdp_test_energy_distance", "best_vanilla_test_energy_distance",
                 "finetune_test_energy_distance"):
        assert [m.step for m in client.get_metric_history(summary.info.run_id, name)] == [10], name
    # the report's new figures reach the summary run
    arts = set(artifacts(uri, summary.info.run_id))
    assert {"figures/n10_parallel.png", "figures/n10_learning_curves.png", "figures/n10_history.png"} <= arts


def test_a_second_report_logs_no_metric_twice(compare_study: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{compare_study / 'mlflow.db'}"
    summary = by_kind(runs(uri, "cmp"), "summary")[0]
    assert main(["report", str(compare_study)]) == 0
    # guards the idempotent sync: the same best values are not logged again
    hist = MlflowClient(uri).get_metric_history(summary.info.run_id, "best_tgdp_test_energy_distance")
    assert len(hist) == 1


def test_inspect_snippets_run_on_a_finished_study(compare_study: Path, tmp_path: Path, monkeypatch):
    """docs/inspect.md's Python snippets, on this study (its name is cmp, not gmm-smoke)."""
    pytest.importorskip("plotly")
    text = (Path(__file__).resolve().parents[2] / "docs" / "inspect.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(snippets) == 3  # Optuna table, Optuna plotly figures, Ray ExperimentAnalysis/ResultGrid
    monkeypatch.chdir(tmp_path)
    for code in snippets:
        code = code.replace("studies/gmm-smoke", str(compare_study)).replace("gmm-smoke-n10", "cmp-n10")
        exec(compile(code, "docs/inspect.md", "exec"), {})  # noqa: S102 - the documented snippet itself
    # guards that the figures were written (the plotly snippet ran to its end)
    assert {"history.html", "parallel.html", "slice.html"} <= {p.name for p in tmp_path.iterdir()}
