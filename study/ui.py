"""``tgdp-study ui DIR``: the MLflow UI of a study (its tracking store and artefact root)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from study.paths import StudyPaths


def server_command(study_dir: str | Path, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The ``mlflow server`` command line serving this study (bound to ``host``, 127.0.0.1 by default)."""
    paths = StudyPaths(Path(study_dir).resolve())
    state_path = paths.root / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    uri = state.get("tracking_uri", paths.mlflow_url)
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    return [exe, "server", "--backend-store-uri", uri, "--default-artifact-root", paths.artifact_location,
            "--host", host, "--port", str(port)]


def serve(study_dir: str | Path, host: str = "127.0.0.1", port: int = 5000) -> int:
    """Run the MLflow UI in the foreground until Ctrl-C; returns its exit code."""
    cmd = server_command(study_dir, host, port)
    if not cmd[3].startswith("sqlite:") and not cmd[3].startswith("file:") and "://" in cmd[3]:
        print(f"this study logs to a tracking server: open {cmd[3]}")
        return 0
    print(f"MLflow UI of {Path(study_dir).resolve()}: http://{host}:{port}  (Ctrl-C to stop)", flush=True)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
