"""tgdp-study command line: exit codes, messages, --dry-run, ls, and lazy dispatch."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import optuna
import pytest
import yaml

from study.cli import main
from study.paths import study_paths
from study.spec import load_spec, write_spec

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "search_spaces" / "gmm_smoke.yaml"
SCRIPT = Path(sys.executable).with_name("tgdp-study")  # the installed console script in the venv


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def bad_spec(tmp_path: Path) -> Path:
    text = SMOKE.read_text().replace("sampler: tpe", "sampler: bayes")
    p = tmp_path / "specs" / "bad.yaml"
    p.parent.mkdir()
    p.write_text(text)
    return p


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --dir ("studies") is relative to the working directory
    return tmp_path


def test_bad_spec_exits_2_and_creates_nothing(in_tmp, capsys):
    spec = bad_spec(in_tmp)
    before = tree(in_tmp)
    assert main(["run", str(spec), "--dir", str(in_tmp / "out")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: sampler: invalid value; got 'bayes'; allowed: 'tpe'" in err and "Traceback" not in err
    assert tree(in_tmp) == before  # no study directory, no --dir, nothing


def test_dry_run_prints_plan_and_creates_nothing(in_tmp, capsys):
    before = tree(in_tmp)
    assert main(["run", str(SMOKE), "--dry-run", "--name", "smoke-1"]) == 0
    out = capsys.readouterr().out
    assert "== search space: 4 parameters, sampler tpe" in out
    assert "guidance.eta_cycle" in out and "off-switch: 0.0 or searched" in out
    assert "== resources ==" in out and "per trial" in out and "fits this machine" in out
    assert "name: smoke-1" in out  # the resolved spec, with --name applied
    assert str(in_tmp / "studies" / "smoke-1") in out
    assert tree(in_tmp) == before


def test_dry_run_with_address_defers_the_resource_check(in_tmp, capsys):
    assert main(["run", str(SMOKE), "--dry-run", "--address", "10.0.0.1:6379"]) == 0
    assert "checked against the cluster at 10.0.0.1:6379 at run time" in capsys.readouterr().out


def test_resources_that_cannot_fit_this_machine(in_tmp, capsys):
    d = yaml.safe_load(SMOKE.read_text())
    d["resources"] = {"workers_per_trial": 0, "cpus_per_trial": 100000}
    p = in_tmp / "huge.yaml"
    p.write_text(yaml.safe_dump(d))
    assert main(["run", str(p), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "huge.yaml: resources.cpus_per_trial: one trial needs 100000 CPUs but this machine has" in err
    assert "allowed: cpus_per_trial + workers_per_trial * cpus_per_worker <=" in err


def test_unsafe_name_option(in_tmp, capsys):
    assert main(["run", str(SMOKE), "--name", "../escape", "--dry-run"]) == 2
    assert "invalid study name '../escape'" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    assert main(["best", "somewhere"]) == 2  # --n is required
    assert main(["frobnicate"]) == 2
    assert main(["--help"]) == 0
    assert "resume" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["resume"], ["status"], ["report"], ["ui"], ["best", "--n", "10"]])
def test_commands_need_a_study_directory(tmp_path, capsys, command):
    argv = [command[0], str(tmp_path), *command[1:]]
    assert main(argv) == 2
    assert f"not a study directory: {tmp_path.resolve()} (no spec.yaml)" in capsys.readouterr().err


def make_study(base: Path) -> Path:
    spec = load_spec(SMOKE)
    paths = study_paths(base, spec.name)
    write_spec(spec, paths)
    return paths.root


def test_run_refuses_an_existing_study(in_tmp, capsys):
    root = make_study(in_tmp / "studies")
    assert main(["run", str(SMOKE)]) == 2
    assert f"study already exists: {root}" in capsys.readouterr().err


def test_help_ls_and_dry_run_import_no_execution_module(tmp_path):
    # guards the lazy dispatch: each command imports what executes it only when it runs, so --help, ls and
    # --dry-run stay quick and work without starting Ray (in a fresh interpreter: this one has them loaded)
    code = (
        "import sys\n"
        "from study.cli import main\n"
        "assert main(['--help']) == 0 and main(['gmm', '--help']) == 0\n"
        f"assert main(['ls', {str(tmp_path)!r}]) == 0\n"
        f"assert main(['run', {str(SMOKE)!r}, '--dry-run']) == 0\n"
        "heavy = {m.split('.')[0] for m in sys.modules} & {'ray', 'torch', 'mlflow', 'optuna', 'matplotlib'}\n"
        "loaded = {m for m in sys.modules if m in ('study.runner', 'study.report', 'study.ui') or\n"
        "          m.startswith('study.programs.')}\n"
        "print(sorted(heavy | loaded))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_dispatch_passes_the_study_directory(in_tmp, capsys, monkeypatch):
    root = make_study(in_tmp / "studies")
    calls = []
    fake = types.ModuleType("study.report")
    fake.status = lambda d: calls.append(("status", d)) or "3 trials"
    fake.export_best = lambda d, n, out, method="tgdp", force=False: calls.append(("best", d, n, out)) or 0
    monkeypatch.setitem(sys.modules, "study.report", fake)
    assert main(["status", str(root)]) == 0 and "3 trials" in capsys.readouterr().out
    assert main(["best", str(root), "--n", "100", "--out", "best.yaml"]) == 0
    assert calls == [("status", root), ("best", root, 100, in_tmp / "best.yaml")]


def test_ls_lists_studies_with_trial_counts(in_tmp, capsys):
    root = make_study(in_tmp / "studies")
    storage = optuna.storages.RDBStorage(f"sqlite:///{root / 'optuna.db'}")
    study = optuna.create_study(study_name="n=10", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    storage.engine.dispose()
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "gmm-smoke  gmm  n=[10, 100]" in out and "n=10: 2 complete" in out
    assert main(["ls", str(in_tmp / "nothing-here")]) == 2



ENTRY = """
import atexit, sys, threading, time
from pathlib import Path
from study import cli
atexit.register(lambda: print("exit functions ran", file=sys.stderr, flush=True))
if sys.argv[1] == "thread":  # a non-daemon thread still running: the ordinary exit waits for it
    threading.Thread(target=lambda: (time.sleep(0.5), Path(sys.argv[2], "late").write_text("x"))).start()
sys.argv = ["tgdp-study", "ls", sys.argv[2]]
cli.entry()
"""


@pytest.mark.parametrize("case", ["plain", "thread"])
def test_entry_skips_teardown_but_not_exit_functions_output_or_threads(tmp_path, case):
    # entry() ends with os._exit: the exit code, the whole piped stdout, the exit functions and a running
    # non-daemon thread's work must survive it
    r = subprocess.run([sys.executable, "-c", ENTRY, case, str(tmp_path)], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "exit functions ran" in r.stderr
    assert (tmp_path / "late").is_file() == (case == "thread")

def test_console_script_end_to_end(tmp_path):
    # the installed entry point: bad spec -> exit 2, message, nothing created; --dry-run -> exit 0, nothing created
    assert SCRIPT.exists(), SCRIPT
    spec = bad_spec(tmp_path)
    before = tree(tmp_path)
    r = subprocess.run([str(SCRIPT), "run", str(spec)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "bad.yaml: sampler" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([str(SCRIPT), "run", str(SMOKE), "--dry-run"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "== search space" in r.stdout and "== resources ==" in r.stdout
    assert tree(tmp_path) == before


def test_make_ecg_sim_is_handed_to_the_simulator(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["make-ecg-sim", str(out), "--domain", "target", "--records", "2", "--seed", "0"]) == 0
    assert (out / "REFERENCE.csv").is_file()
    # a second run refuses to overwrite: a user error, exit 2
    assert main(["make-ecg-sim", str(out), "--domain", "target", "--records", "2", "--seed", "0"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["make-ecg-sim", str(out), "--domain", "sideways"]) == 2  # its own argparse
