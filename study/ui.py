"""``tgdp-study ui DIR``: the MLflow UI of a study (its tracking store and artefact root)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from study import UserError
from study.paths import StudyPaths


def server_command(study_dir: str | Path, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The ``mlflow server`` command line serving this study (bound to ``host``, 127.0.0.1 by default)."""
    paths = StudyPaths(Path(study_dir).resolve())
    uri = paths.read_state().get("tracking_uri", paths.mlflow_url)
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    return [exe, "server", "--backend-store-uri", uri, "--default-artifact-root", paths.artifact_location,
            "--host", host, "--port", str(port), "--workers", "1"]


class _Stopped(Exception):
    """SIGTERM or SIGHUP arrived: leave ``serve`` through its ``finally`` (which stops the server)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped(signum)


def _answers(host: str, port: int) -> bool:
    """True when an HTTP server answers on host:port (any HTTP status counts; a wildcard host is asked on
    the loopback address)."""
    import urllib.error
    import urllib.request

    ask = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    ask = f"[{ask}]" if ":" in ask else ask
    try:
        urllib.request.urlopen(f"http://{ask}:{port}/health", timeout=2).close()
    except urllib.error.HTTPError:
        return True  # it answered, with an error status
    except (OSError, ValueError):
        return False
    return True


def serve(study_dir: str | Path, host: str = "127.0.0.1", port: int = 5000, start_timeout: float = 300.0) -> int:
    """Run the MLflow UI in the foreground until Ctrl-C, SIGTERM or SIGHUP; returns its exit code.

    The URL is printed once the server answers (MLflow migrates its database first: seconds). Whatever ends
    ``serve`` (a signal, an exception, the server exiting), the server's whole process group is stopped, so
    nothing keeps the port. A port something already answers on is refused before anything starts."""
    cmd = server_command(study_dir, host, port)
    if not cmd[3].startswith("sqlite:") and not cmd[3].startswith("file:") and "://" in cmd[3]:
        print(f"this study logs to a tracking server: open {cmd[3]}")
        return 0
    if _answers(host, port):
        raise UserError(f"ui --port {port}: a server already answers on {host}:{port}; choose another --port")
    from study.relocate import relocate_mlflow
    from study.spec import read_study_spec

    paths = StudyPaths(Path(study_dir).resolve())
    relocate_mlflow(paths, cmd[3], read_study_spec(paths).name)  # a moved or copied study shows its own artefacts
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    print(f"starting the MLflow UI of {paths.root} ...", flush=True)
    # Its own session, stopped as a group: on Ctrl-C `mlflow server` exits but its uvicorn workers and job
    # runners (huey consumers) did not, and kept the port. A study UI runs no MLflow jobs: those are off.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    stops = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in stops}
    proc = None
    try:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        deadline = time.time() + start_timeout
        while not _answers(host, port):
            if proc.poll() is not None:
                print(f"mlflow server exited with code {proc.returncode} before it answered", file=sys.stderr)
                return proc.returncode or 1
            if time.time() > deadline:
                print(f"mlflow server did not answer on {url} within {start_timeout:g} s", file=sys.stderr)
                return 1
            time.sleep(0.3)
        print(f"MLflow UI of {Path(study_dir).resolve()}: {url}  (Ctrl-C to stop)", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    except _Stopped as e:
        return 128 + e.signum
    finally:
        for sig in (*stops, signal.SIGINT):  # a second signal must not cut the stopping short
            previous.setdefault(sig, signal.signal(sig, signal.SIG_IGN))
        if proc is not None:
            stop_group(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
