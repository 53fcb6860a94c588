"""Helpers shared by the performance benchmarks: environment record, result files, timed CLI runs.

Every benchmark writes ``bench/results/<name>.json`` with its inputs, the environment (torch/ray
versions, cpu count, load, date), raw timings, ratios and the goal with pass/fail, and prints a
short summary. Ratios are always measured within one run of one script (the 2 cores are shared, so
absolute times drift between runs).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent  # the venv's bin (tgdp-study, py-spy)
LOAD_AT_START = os.getloadavg()  # the box's load when the benchmark started (other jobs share the 2 cores)


def busy() -> bool:
    """True when the box ran more than one job per core at the start or at the end of the benchmark: its
    timings are then recorded, but a goal is not judged on them (``judge``)."""
    return max(LOAD_AT_START[0], os.getloadavg()[0]) > (os.cpu_count() or 1)


def judge(ok: bool) -> bool | None:
    """The ``pass`` of a result file: None (not judged) on a busy box."""
    return None if busy() else ok


def environment() -> dict[str, Any]:
    """Versions, cores and load: what a reader needs to compare two result files."""
    import torch

    out: dict[str, Any] = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
                           "torch": torch.__version__, "cpu_count": os.cpu_count(),
                           "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
                           "loadavg_at_start": [round(x, 2) for x in LOAD_AT_START], "busy": busy(),
                           "platform": platform.platform()}
    for mod in ("ray", "optuna", "mlflow"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing package is recorded, not fatal
            out[mod] = None
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                           text=True, check=False).stdout.strip()
    except OSError:
        out["git_commit"] = None
    return out


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return path


def single_thread_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for child processes: 1 intra-op thread (2 shared cores; 2 threads under contention are
    far slower than 1), Train V2; Ray token authentication as a study runs it (``study.ray_auth``)."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "RAY_TRAIN_V2_ENABLED": "1", "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def run_timed(cmd: list[str], env: dict[str, str], log: Path | None = None,
              timeout: float | None = None) -> tuple[float, list[tuple[float, str]], int]:
    """Run ``cmd`` (stderr merged into stdout); returns (wall s, [(t since start, line)], exit code).

    The wall time ends when the process exits (when a shell prompt would return), not at the end of its output:
    processes Ray started may hold the pipe open for a few seconds while they stop."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    wall = time.perf_counter() - t0
    reader.join(timeout=30)  # the rest of the output
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(f"{t:8.2f}  {s}\n" for t, s in lines))
    return wall, list(lines), rc


def first(lines: list[tuple[float, str]], pattern: str) -> float | None:
    """Time of the first line matching the regex ``pattern``."""
    rx = re.compile(pattern)
    return next((t for t, s in lines if rx.search(s)), None)


def _clock_s(text: str) -> float:
    """Seconds of a ``study.progress.clock`` string: ``3s``, ``1m04s``, ``2h03m``."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not m:
        raise ValueError(f"not a progress clock: {text!r}")
    h, mi, se = (int(x or 0) for x in m.groups())
    return 3600.0 * h + 60.0 * mi + se


def study_timeline(lines: list[tuple[float, str]], wall: float) -> dict[str, Any]:
    """Phases of one ``tgdp-study run`` from its timestamped stdout (``study.console`` / ``study.progress``
    lines). ``startup_s``: the start-up block (``study <name>``, printed once Ray and MLflow are up)."""
    t_study = first(lines, r"^study \S+$")
    t_done = first(lines, r"all units done in")
    units: dict[str, dict[str, Any]] = {}
    trials: list[dict[str, Any]] = []
    open_trials: dict[str, tuple[str, float]] = {}
    for t, s in lines:
        m = re.match(r"^\[unit \d+/\d+ (\S+)\] (.*)$", s)
        if not m:
            continue
        label, msg = m.groups()
        u = units.setdefault(label, {"start": t})
        if (sm := re.match(r"shared stages done in (\S+)$", msg)):
            u["shared_s"] = _clock_s(sm.group(1))
            u["shared_end"] = t
        elif re.match(r"\S+: (resuming )?\d+ trials$", msg):
            u.setdefault("tune_start", t)
        elif (tm := re.match(r"\S+ trial \d+/\d+ (\S+) running:", msg)):
            open_trials[tm.group(1)] = (label, t)
        elif (tm := re.match(r"\S+ trial \d+/\d+ (\S+) (finished|stopped early at epoch (\d+)|FAILED)", msg)):
            lab, ts = open_trials.pop(tm.group(1), (label, None))
            trials.append({"unit": lab, "trial": tm.group(1), "started": ts, "ended": t,
                           "wall_s": None if ts is None else round(t - ts, 2),
                           "stopped_epoch": int(tm.group(3)) if tm.group(3) else None,
                           "failed": tm.group(2) == "FAILED"})
            u["end"] = t
    return {"startup_s (imports, MLflow db, ray.init)": t_study, "units": units, "trials": trials,
            "all_units_done_at_s": t_done, "report_s": None if t_done is None else round(wall - t_done, 2),
            "first_trial_result_at_s": min((tr["ended"] for tr in trials), default=None), "wall_s": wall}


def median(xs: list[float]) -> float:
    ys = sorted(xs)
    k = len(ys) // 2
    return ys[k] if len(ys) % 2 else 0.5 * (ys[k - 1] + ys[k])


def verdict(ok: bool) -> str:
    return "not judged (busy box)" if busy() else "PASS" if ok else "FAIL"
