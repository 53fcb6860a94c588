"""``tgdp-study ui DIR``: the MLflow UI of a study (its tracking store and artefact root)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from study.paths import StudyPaths


def server_command(study_dir: str | Path, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The ``mlflow server`` command line serving this study (bound to ``host``, 127.0.0.1 by default)."""
    paths = StudyPaths(Path(study_dir).resolve())
    uri = paths.read_state().get("tracking_uri", paths.mlflow_url)
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    return [exe, "server", "--backend-store-uri", uri, "--default-artifact-root", paths.artifact_location,
            "--host", host, "--port", str(port), "--workers", "1"]


def serve(study_dir: str | Path, host: str = "127.0.0.1", port: int = 5000) -> int:
    """Run the MLflow UI in the foreground until Ctrl-C; returns its exit code."""
    cmd = server_command(study_dir, host, port)
    if not cmd[3].startswith("sqlite:") and not cmd[3].startswith("file:") and "://" in cmd[3]:
        print(f"this study logs to a tracking server: open {cmd[3]}")
        return 0
    from study.relocate import relocate_mlflow
    from study.spec import read_study_spec

    paths = StudyPaths(Path(study_dir).resolve())
    relocate_mlflow(paths, cmd[3], read_study_spec(paths).name)  # a moved or copied study shows its own artefacts
    print(f"MLflow UI of {Path(study_dir).resolve()}: http://{host}:{port}  (Ctrl-C to stop)", flush=True)
    # Its own session, stopped as a group: on Ctrl-C `mlflow server` exits but its uvicorn workers and job
    # runners (huey consumers) did not, and kept the port. A study UI runs no MLflow jobs: those are off.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process group of ``proc`` (a session leader), then SIGKILL what is left after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; give the rest of its group a moment
            deadline = time.time() + timeout
            while time.time() < deadline:
                os.killpg(proc.pid, 0)
                time.sleep(0.2)
        except ProcessLookupError:
            return
