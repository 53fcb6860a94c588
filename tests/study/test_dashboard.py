"""``tgdp-study dashboard``: optuna-dashboard of a study's optuna.db on 127.0.0.1 (a real server, a real
Optuna database), and the message naming the optional extra when it is not installed."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from study.cli import main
from study.paths import StudyPaths
from study.spec import load_spec, write_spec
from tests.study_util import tiny_spec

SCRIPT = Path(sys.executable).with_name("tgdp-study")


def study_with_trials(tmp_path: Path) -> StudyPaths:
    """A study directory with spec.yaml and the Optuna study of unit n10 holding two told trials."""
    spec = load_spec(tiny_spec(tmp_path, "dash"))
    paths = StudyPaths((tmp_path / "studies" / "dash").resolve())
    write_spec(spec, paths)
    paths.make_dirs()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=paths.optuna_url, study_name="dash-n10")
    for v in (0.2, 0.1):
        t = study.ask({"guidance.width": optuna.distributions.CategoricalDistribution([16, 32])})
        study.tell(t, v)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_dashboard_serves_the_study_on_localhost_and_stops(tmp_path, sig):
    pytest.importorskip("optuna_dashboard")
    paths = study_with_trials(tmp_path)
    port = free_port()
    proc = subprocess.Popen([str(SCRIPT), "dashboard", str(paths.root), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # printed once the socket is bound
        # guards the address: 127.0.0.1 only, the port asked for
        assert f"http://127.0.0.1:{port}" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=30) as r:
            studies = json.load(r)["study_summaries"]
        # guards that it serves this study's optuna.db: the Optuna study of its unit, nothing else
        assert [s["study_name"] for s in studies] == ["dash-n10"]
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0  # stopped cleanly, nothing left listening
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_dashboard_names_the_extra_when_it_is_missing(tmp_path, monkeypatch, capsys):
    paths = study_with_trials(tmp_path)
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # what find_spec reports for a missing package
    assert main(["dashboard", str(paths.root)]) == 2
    err = capsys.readouterr().err
    # guards the one-line message: what is missing and the extra that installs it
    assert "optuna_dashboard not installed" in err and "pip install -e '.[dashboard]'" in err and err.count("\n") == 1


def test_dashboard_of_a_study_without_optuna_db_exits_2(tmp_path, capsys):
    pytest.importorskip("optuna_dashboard")
    spec = load_spec(tiny_spec(tmp_path, "empty"))
    paths = StudyPaths((tmp_path / "studies" / "empty").resolve())
    write_spec(spec, paths)
    assert main(["dashboard", str(paths.root)]) == 2
    assert "no optuna.db yet" in capsys.readouterr().err
    assert not paths.optuna_db.exists()  # nothing created by looking
