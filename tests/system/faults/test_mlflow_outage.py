"""The MLflow server goes away mid-study and comes back: no result is lost; what could not be logged is
logged by `resume` (or `report`), without duplicated runs or runs left RUNNING."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.system.faults import ENV, Driver, check_study, completed_ids, fault_spec, run_cli

pytestmark = [pytest.mark.ray, pytest.mark.slow]
MLFLOW = Path(sys.executable).with_name("mlflow")


def _server(db: Path, port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=open(log, "a"), stderr=subprocess.STDOUT,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
    raise AssertionError("mlflow server did not start")


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def test_mlflow_server_outage(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    db, slog = tmp_path / "srv.db", tmp_path / "server.log"
    name = "outage"
    spec = fault_spec(tmp_path, name)
    study = tmp_path / "studies" / name
    env = {**ENV, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}
    server = _server(db, port, slog)
    d = Driver(["run", str(spec), "--dir", str(tmp_path / "studies"), "--tracking-uri", uri], tmp_path / "run.log",
               env=env)
    try:
        d.wait_for(lambda: "trial " in d.output() and " running: " in d.output(), 400, "the first trial")
        _stop(server)  # the server goes away mid-trial
        try:
            code = d.wait(400)  # the driver may fail on the lost server, or carry on without it
        except subprocess.TimeoutExpired:
            code = None
    finally:
        d.cleanup()
    out = d.output()
    kept = completed_ids(study)
    server = _server(db, port, slog)  # back, same store
    try:
        if code == 0:  # finished without MLflow: `report` logs what is missing
            r = run_cli(["report", str(study)], env=env)
        else:
            r = run_cli(["resume", str(study)], env=env)
        assert r.returncode == 0, out[-3000:] + r.stdout[-3000:] + r.stderr[-3000:]
        check_study(study, name, trials=2, kept=kept, tracking_uri=uri)
    finally:
        _stop(server)
