"""The study workflow without Ray: ``run --set``, ``resume --add-trials``, ``resume`` of a finished study, and the
hints when a verb is given the parent of a study (or ``run --dir`` a study)."""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from study.cli import main
from study.extend import add_trials, mark_done, study_finished
from study.paths import StudyPaths, method_runs, open_study_dir, study_paths
from study.spec import load_spec, read_study_spec, write_spec

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "search_spaces" / "gmm_smoke.yaml"


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def finished_study(base: Path, trials: int = 2) -> Path:
    """A study directory as a finished run leaves it (spec, DONE markers with their budget, the report)."""
    spec = load_spec(SMOKE)
    paths = study_paths(base, spec.name)
    write_spec(spec, paths)
    for *_, run in method_runs(spec):
        mark_done(paths, run, spec, trials)
    paths.report.mkdir(parents=True)
    (paths.report / "summary.md").write_text("| n | method |\nREPORT-TEXT\n")
    return paths.root


# --- run --set ---------------------------------------------------------------------------------------------

def test_run_set_overrides_the_spec_and_is_recorded(in_tmp, capsys, monkeypatch):
    assert main(["run", str(SMOKE), "--dry-run", "--set", "budget.trials_per_n=5",
                 "--set", "space.guidance.width.choices=[16, 64]", "--set", "fixed.guidance.lr=1e-3"]) == 0
    out = capsys.readouterr().out
    # the values as YAML reads them (1e-3 a float), in the resolved spec the study would record
    assert "budget: {trials_per_n: 5}" in out and "guidance.width            categorical [16, 64]" in out
    assert "lr: 0.001" in out
    # the real run hands the overridden spec to the runner, which records it in spec.yaml (read back by resume)
    fake = types.ModuleType("study.runner")
    fake.run_study = lambda spec, root, address, uri, **kw: write_spec(spec, StudyPaths(Path(root))) or 0
    monkeypatch.setitem(sys.modules, "study.runner", fake)
    assert main(["run", str(SMOKE), "--set", "budget.trials_per_n=3"]) == 0
    spec = read_study_spec(open_study_dir(in_tmp / "studies" / "gmm-smoke"))  # hash-checked
    assert spec.budget.trials_per_n == 3


@pytest.mark.parametrize("item, message", [
    ("budget.trails_per_n=3", "budget.trails_per_n: unknown key; got 'trails_per_n'; allowed: trials_per_n"),
    ("budget.trials_per_n=0", "budget.trials_per_n: invalid value; got 0"),
    ("sampler=bayes", "sampler: invalid value; got 'bayes'; allowed: 'tpe'"),
    ("sampler.seed=1", "sampler: --set sampler.seed=1: not a mapping"),
    ("budget", "--set 'budget': expected KEY=VALUE"),
])
def test_run_set_bad_key_or_value_exits_2_and_writes_nothing(in_tmp, capsys, item, message):
    before = tree(in_tmp)
    assert main(["run", str(SMOKE), "--set", item]) == 2
    err = capsys.readouterr().err
    # the same message as the key written in the YAML, naming the file and the override
    assert f"gmm_smoke.yaml + --set {item}: " in err and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert tree(in_tmp) == before


def test_gmm_set_shares_the_parser():
    from study.programs import gmm

    cfg = gmm.apply_overrides(gmm.default_config(0), ["guidance.lr=1e-3"])
    assert cfg.guidance.lr == 0.001  # YAML 1.2: a float, as in a spec
    with pytest.raises(ValueError, match="e.g. guidance.width=256"):
        gmm.apply_overrides(cfg, ["guidance.width"])


# --- resume --add-trials -------------------------------------------------------------------------------------

def test_add_trials_is_recorded_and_hash_checked(tmp_path):
    root = finished_study(tmp_path / "studies")
    paths = open_study_dir(root)
    assert study_finished(paths, read_study_spec(paths))
    new = add_trials(paths, 3)
    again = read_study_spec(paths)  # spec.yaml and spec.sha256 agree: the hash check passes
    assert new.budget.trials_per_n == again.budget.trials_per_n == 5
    assert "trials_per_n: 5" in paths.spec.read_text()
    assert not study_finished(paths, again)  # every run now has 3 trials to run
    # a plain edit of the recorded spec is still refused
    paths.spec.write_text(paths.spec.read_text().replace("trials_per_n: 5", "trials_per_n: 9"))
    with pytest.raises(ValueError, match="changed since the study was created"):
        read_study_spec(paths)


def test_add_trials_refuses_an_unfinished_study(tmp_path, capsys):
    root = finished_study(tmp_path / "studies")
    paths = open_study_dir(root)
    paths.done_marker("n100").unlink()
    before = (paths.spec.read_text(), paths.spec_sha.read_text())
    assert main(["resume", str(root), "--add-trials", "2"]) == 2
    assert "unfinished runs (n100)" in capsys.readouterr().err
    assert (paths.spec.read_text(), paths.spec_sha.read_text()) == before
    assert main(["resume", str(root), "--add-trials", "0"]) == 2  # argparse: an integer >= 1


def test_old_done_markers_count_as_finished_and_are_stamped(tmp_path):
    root = finished_study(tmp_path / "studies")
    paths = open_study_dir(root)
    for *_, run in method_runs(read_study_spec(paths)):
        paths.done_marker(run).write_text("2 trials\n")  # as written before budgets were recorded
    assert study_finished(paths, read_study_spec(paths))
    add_trials(paths, 1)
    assert paths.done_marker("n10").read_text() == "2 trials\ntrials_per_n 2\n"


# --- resume of a finished study ------------------------------------------------------------------------------

def test_resume_of_a_finished_study_returns_at_once_without_ray(tmp_path):
    root = finished_study(tmp_path / "studies")
    # a fresh interpreter: neither Ray nor the runner may be imported, and it returns in seconds (was 23 s)
    code = ("import sys, time\nfrom study.cli import main\nt0 = time.time()\n"
            f"rc = main(['resume', {str(root)!r}])\n"
            "print('RC', rc, 'TIME', round(time.time() - t0, 2), 'RAY', 'ray' in sys.modules, "
            "'RUNNER', 'study.runner' in sys.modules)\n")
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "finished (2 trials per unit and method)" in r.stdout and "REPORT-TEXT" in r.stdout  # fresh report
    last = r.stdout.strip().splitlines()[-1].split()
    assert last[1] == "0" and last[5] == "False" and last[7] == "False", r.stdout
    assert float(last[3]) < 5.0 and time.time() - t0 < 60


# --- the study directory and its parent ------------------------------------------------------------------------

@pytest.mark.parametrize("verb", [["status"], ["report"], ["resume"], ["ui"], ["best", "--n", "10"],
                                  ["evaluate", "--seeds", "100"]])
def test_a_verb_given_the_parent_names_the_study_inside(in_tmp, capsys, verb):
    finished_study(in_tmp / "studies")
    assert main([verb[0], "studies", *verb[1:]]) == 2
    err = capsys.readouterr().err
    assert "(no spec.yaml); did you mean studies/gmm-smoke?" in err, err


def test_several_studies_inside_are_all_named(in_tmp, capsys):
    finished_study(in_tmp / "studies")
    spec = load_spec(SMOKE).model_copy(update={"name": "other"})
    write_spec(spec, study_paths(in_tmp / "studies", "other"))
    assert main(["status", "studies"]) == 2
    assert "did you mean one of studies/gmm-smoke, studies/other?" in capsys.readouterr().err


def test_run_dir_given_a_study_says_it_takes_the_parent(in_tmp, capsys):
    root = finished_study(in_tmp / "studies")
    assert main(["run", str(SMOKE), "--dir", str(root), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"--dir {root}: is a study directory; --dir takes the parent" in err
    assert main(["run", "--help"]) == 0
    assert "the PARENT directory" in capsys.readouterr().out


# --- output into a closed pipe ------------------------------------------------------------------------------------

def study_with_a_best_trial(base: Path) -> Path:
    """A finished study whose n=10 Optuna study holds one COMPLETE trial (what `best` exports)."""
    import optuna

    root = finished_study(base)
    storage = optuna.storages.RDBStorage(f"sqlite:///{root / 'optuna.db'}")
    study = optuna.create_study(study_name="gmm-smoke-n10", storage=storage)
    dist = optuna.distributions
    study.add_trial(optuna.trial.create_trial(
        params={"guidance.eta_cycle:switch": "off", "guidance.eta_consistency:switch": "off", "guidance.width": 16,
                "sample.guidance_scale": 1.0},
        distributions={"guidance.eta_cycle:switch": dist.CategoricalDistribution(["off", "on"]),
                       "guidance.eta_consistency:switch": dist.CategoricalDistribution(["off", "on"]),
                       "guidance.width": dist.CategoricalDistribution([16, 32]),
                       "sample.guidance_scale": dist.FloatDistribution(0.5, 1.5)}, value=0.01,
        user_attrs={"tune_trial_id": "t0"}))
    storage.engine.dispose()
    result = root / "trials" / "n10" / "t0" / "result.pt"  # it ran to its final evaluation
    result.parent.mkdir(parents=True)
    result.write_bytes(b"")
    return root


@pytest.mark.parametrize("argv", [["best", "{root}", "--n", "10"], ["run", str(SMOKE), "--dry-run"]],
                         ids=["best", "dry-run"])
def test_output_into_a_closed_pipe_exits_0_without_traceback(tmp_path, argv):
    root = study_with_a_best_trial(tmp_path / "studies")
    argv = [a.format(root=root) for a in argv]
    script = Path(sys.executable).with_name("tgdp-study")
    check = subprocess.run([str(script), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and len(check.stdout.splitlines()) > 5, check.stderr  # it has much to print
    # `... | head -1` that has already gone: the read end is closed before the command writes a byte
    proc = subprocess.Popen([str(script), *argv], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err


# --- --version, examples, ecg help, the dry-run's layout and estimate ----------------------------------------------

def test_version_comes_from_the_package_metadata(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"tgdp-study {version('tgdp-study')}"


def test_every_command_has_an_example_and_every_ecg_option_a_help(capsys):
    from study.cli import build_parser
    from study.cli_help import EXAMPLES

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(EXAMPLES)  # a new command needs its example
    for name in sub.choices:
        assert main([name, "--help"]) == 0
        out = capsys.readouterr().out
        assert "example" in out and f"tgdp-study {name}" in out.split("example", 1)[1], name
    import argparse

    from study.programs import ecg

    p = argparse.ArgumentParser()
    ecg._add_arguments(p)
    bare = [a.option_strings for a in p._actions if not a.help and a.option_strings != ["-h", "--help"]]
    assert bare == []  # every ecg option says what it does


def test_dry_run_shows_the_layout_and_an_estimate_from_the_bench(in_tmp, capsys):
    assert main(["run", str(SMOKE), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"== what it will write: {in_tmp / 'studies' / 'gmm-smoke'}/ ==" in out
    assert "one Optuna study per unit and tuned method: gmm-smoke-n10, gmm-smoke-n100" in out
    assert "== estimated run time (an estimate from measured rates, not a promise) ==" in out
    # the smoke spec was measured as it is: that file, and the same stage sizes
    assert "rates from bench/results/study_overhead.json: gmm_smoke.yaml" in out and "the same stage sizes" in out
    assert main(["run", str(SMOKE), "--dry-run", "--set", "fixed.guidance.width=64"]) == 0
    assert "a rough scale only" in capsys.readouterr().out  # other stage sizes: said so


def test_estimate_adds_up_the_measured_rates(tmp_path):
    # a measurement written here: start-up 10 s, shared 20 s per unit, 2 trials in 8 s of Tune run, report 4 s
    import json

    from study.estimate import estimate

    timeline = {"startup_s (imports)": 10.0, "report_s": 4.0,
                "units": {"n10": {"shared_s": 20.0, "tune_start": 30.0, "end": 38.0}},
                "trials": [{"unit": "n10"}, {"unit": "n10"}]}
    (tmp_path / "default_study.json").write_text(json.dumps(
        {"inputs": {"spec": "search_spaces/gmm_smoke.yaml"}, "raw": {"timeline": timeline}}))
    spec = load_spec(SMOKE)  # 2 units, 1 tuned method, 2 trials: 10 + 2 x (20 + 2 x 4) + 4 = 70 s
    text = estimate(spec, tmp_path)
    assert ("about 70 s = start-up 10 s + 2 unit(s) x (shared stages 20 s + 1 tuned method(s) x 2 trials x 4.0 s)"
            in text)
    assert "none: no measured study" in estimate(spec, tmp_path / "missing")
