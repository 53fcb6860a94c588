"""study/paths.py: unit labels, the trial result layout, and state.json (relative paths; old absolute ones read)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from study.paths import RESULT_FILE, StudyPaths, run_name, unit_label, units
from study.spec import load_spec
from tests.study_util import tiny_spec


def test_unit_labels_one_seed_and_several(tmp_path):
    one = load_spec(tiny_spec(tmp_path, "one", factors={"n": [10, 100], "seeds": [0]}))
    assert units(one) == [(10, 0, "n10"), (100, 0, "n100")]  # one seed: the label names n only
    many = load_spec(tiny_spec(tmp_path, "many", factors={"n": [10, 100], "seeds": [0, 4]}))
    # n outer, seed inner: the run order of the units
    assert units(many) == [(10, 0, "n10-s0"), (10, 4, "n10-s4"), (100, 0, "n100-s0"), (100, 4, "n100-s4")]
    assert unit_label(many, 100, 4) == "n100-s4" and run_name(many, "n10-s4") == "many-n10-s4"


def test_trial_result_layout(tmp_path):
    paths = StudyPaths(tmp_path / "s")
    assert paths.trials_dir("n10") == tmp_path / "s" / "trials" / "n10"
    assert paths.result("n10", "abc_00000") == tmp_path / "s" / "trials" / "n10" / "abc_00000" / RESULT_FILE
    assert paths.done_marker("n10") == tmp_path / "s" / "trials" / "n10" / "DONE"
    assert paths.state == tmp_path / "s" / "state.json"


def test_state_stores_paths_inside_the_study_relative(tmp_path):
    paths = StudyPaths((tmp_path / "s").resolve())
    paths.make_dirs()
    assert paths.read_state() == {}  # before the first run
    paths.write_state({"cache_dir": str(paths.cache), "tracking_uri": paths.mlflow_url})
    on_disk = json.loads(paths.state.read_text())
    assert on_disk == {"cache_dir": "cache", "tracking_uri": "sqlite:///mlflow.db"}  # relative to the study
    assert not list(paths.root.glob("*.tmp"))  # written atomically, nothing left behind
    assert paths.read_state() == {"cache_dir": str(paths.cache), "tracking_uri": paths.mlflow_url}
    # the study moved: the state follows it
    moved = StudyPaths((tmp_path / "elsewhere").resolve())
    shutil.copytree(paths.root, moved.root)
    assert moved.read_state() == {"cache_dir": str(moved.cache), "tracking_uri": moved.mlflow_url}


def test_state_keeps_paths_outside_the_study_and_servers_as_they_are(tmp_path):
    paths = StudyPaths((tmp_path / "s").resolve())
    paths.make_dirs()
    shared = (tmp_path / "shared-cache").resolve()
    state = {"cache_dir": str(shared), "tracking_uri": "http://127.0.0.1:5000"}
    paths.write_state(state)
    assert json.loads(paths.state.read_text()) == state
    assert paths.read_state() == state
    outside = f"sqlite:///{tmp_path.resolve() / 'other.db'}"
    paths.write_state({"tracking_uri": outside})
    assert paths.read_state() == {"tracking_uri": outside}


def test_a_relative_sqlite_tracking_uri_given_by_the_user_stays_where_mlflow_reads_it(tmp_path, monkeypatch):
    # `--tracking-uri sqlite:///x.db` means x.db in the working directory: stored absolute, not study-relative
    monkeypatch.chdir(tmp_path)
    uri = StudyPaths.absolute_uri("sqlite:///x.db")
    assert uri == f"sqlite:///{tmp_path.resolve() / 'x.db'}"
    assert StudyPaths.absolute_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    paths = StudyPaths((tmp_path / "s").resolve())
    paths.make_dirs()
    paths.write_state({"tracking_uri": uri})
    assert paths.read_state() == {"tracking_uri": uri}


def test_old_absolute_state_is_still_read(tmp_path):
    # studies created before relative state paths stored absolute ones
    paths = StudyPaths((tmp_path / "s").resolve())
    paths.make_dirs()
    old = {"cache_dir": str(paths.cache), "tracking_uri": f"sqlite:///{paths.mlflow_db}"}
    paths.state.write_text(json.dumps(old, indent=1))
    assert paths.read_state() == old


def test_the_runner_and_report_read_state_through_study_paths():
    # guards a single reader: a raw json read of state.json would take a relative cache dir from the cwd
    root = Path(__file__).resolve().parents[2] / "study"
    literal = re.compile(r"[\"']state\.json[\"']")  # in code, not in a docstring's prose
    raw = [p.name for p in root.rglob("*.py") if p.name != "paths.py" and literal.search(p.read_text())]
    assert raw == [], raw
