"""The workflow on real Ray, Optuna and MLflow: ``run`` while a ``ray start --head`` runs on the machine, then
``resume`` of the finished study (no Ray) and ``resume --add-trials`` (the extension's trials join the same
Optuna study)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.study_util import optuna_trials, tiny_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow]
BIN = Path(sys.executable).parent
SCRIPT, RAY = BIN / "tgdp-study", BIN / "ray"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A ``ray start --head --block`` of our own (its own session and temp dir: stopping it stops only what it
    started, never another Ray of the machine); yields (process, address)."""
    port = free_port()
    temp = tmp_path_factory.mktemp("rayhead")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    # every port of its own: Ray's fixed defaults (dashboard agent 52365, ...) would collide with the study's Ray
    ports = [f"--{name}-port={free_port()}" for name in ("dashboard-agent-listen", "dashboard-agent-grpc",
                                                          "metrics-export", "runtime-env-agent", "dashboard",
                                                          "ray-client-server", "node-manager", "object-manager")]
    log = open(temp / "ray_start.log", "w")
    proc = subprocess.Popen([str(RAY), "start", "--head", "--block", f"--port={port}", "--num-cpus=1", *ports,
                             "--include-dashboard=false", f"--temp-dir={temp}"], env=env, start_new_session=True,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:  # the GCS port answers once the head is up
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert proc.poll() is None, "ray start --head exited"
        time.sleep(0.5)
    yield proc, f"127.0.0.1:{port}"
    log.close()
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):  # --block: SIGTERM stops what it started
        try:
            os.killpg(proc.pid, sig)  # its own session: the head and any Ray process of it still there
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def cli(*args: str, env: dict | None = None, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})})


def test_run_with_a_ray_head_running_then_resume_and_add_trials(ray_head, tmp_path):
    proc, address = ray_head
    spec = tiny_spec(tmp_path, "wf", factors={"n": [10]}, budget={"trials_per_n": 1})
    # RAY_ADDRESS points at the running head: a plain ray.init() would join it and refuse num_cpus (exit 1,
    # traceback); run must start a Ray of its own and leave the head alone
    r = cli("run", str(spec), "--dir", "studies", env={"RAY_ADDRESS": address}, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "must not be provided" not in r.stderr
    assert proc.poll() is None, Path(proc.args[-1].split("=", 1)[1], "ray_start.log").read_text()[-3000:]  # still up
    root = tmp_path / "studies" / "wf"
    assert (root / "trials" / "n10" / "DONE").read_text() == "1 trials\ntrials_per_n 1\n"

    t0 = time.time()
    r = cli("resume", str(root), cwd=tmp_path)  # finished: no Ray, the report as it is
    assert r.returncode == 0 and "finished (1 trials per unit and method)" in r.stdout, r.stderr
    assert "summary" in r.stdout.lower() or "|" in r.stdout
    assert time.time() - t0 < 30, time.time() - t0

    r = cli("resume", str(root), "--add-trials", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "budget.trials_per_n 1 -> 2" in r.stdout and (root / "ray" / "wf-n10-to2").is_dir()  # the extension run
    trials = optuna_trials(root, "wf-n10")  # the same Optuna study: the sampler saw the first trial
    assert len(trials) == 2 and all(t.state.is_finished() for t in trials)
    assert (root / "trials" / "n10" / "DONE").read_text() == "2 trials\ntrials_per_n 2\n"
    assert "trials_per_n: 2" in (root / "spec.yaml").read_text()
    r = cli("status", str(root), cwd=tmp_path)
    assert r.returncode == 0 and "(of 2)" in r.stdout and "[done]" in r.stdout, r.stdout
