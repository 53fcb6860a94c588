"""The console of `tgdp-study run` as a user sees it in a log (stdout not a terminal): our progress lines and
nothing else. The smoke study (2 units x 2 trials) through the real CLI, Ray, Optuna and MLflow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.study_util import optuna_trials, tiny_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow]
SCRIPT = Path(sys.executable).with_name("tgdp-study")

NOISE = {  # what the console printed before issue 15, and must not print by default
    "ANSI escape codes": "\x1b[",
    "alembic / MLflow INFO lines": "INFO mlflow",
    "Optuna INFO lines": "[I 20",
    "Ray INFO lines": "Started a local Ray instance",
    "Tune's configuration box": "Configuration for experiment",
    "Tune's search algorithm line": "SearchGenerator",
    "Tune's TensorBoard hint": "tensorboard --logdir",
    "RayDeprecationWarning": "RayDeprecationWarning",
    "the SystemExit of a stopped trial": "Exception ignored",
    "switch pseudo-parameters": ":switch",
}


def test_run_prints_progress_lines_and_no_noise_when_stdout_is_not_a_terminal(tmp_path):
    spec = tiny_spec(tmp_path, "quiet")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_COLOR_PREFIX", None)
    t0 = time.time()
    r = subprocess.run([str(SCRIPT), "run", str(spec), "--dir", str(tmp_path / "studies")], capture_output=True,
                       text=True, env=env, timeout=600)
    print(f"smoke study through the CLI: {time.time() - t0:.1f} s")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    study = tmp_path / "studies" / "quiet"
    # guards the start-up lines: where the results, the MLflow UI and the Ray dashboard are, printed once
    assert out.count(f"  results        {study}") == 1 and f"MLflow UI      tgdp-study ui {study}" in out
    assert out.count("  Ray dashboard  ") == 1
    # guards the progress: unit k/N and trial k/N on every trial line, each trial's state, the shared stages
    for k, label in ((1, "n10"), (2, "n100")):
        prefix = re.escape(f"[unit {k}/2 {label}]")
        assert re.search(prefix + r" shared stages done in \d", out), out
        for t in (1, 2):
            assert re.search(prefix + rf" tgdp trial {t}/2 \w+ running: ", out), out
            assert re.search(prefix + rf" tgdp trial {t}/2 \w+ (finished|stopped early at epoch \d): "
                                      r"energy_distance=[\d.]+ \| best .* \| \d/4 trials, ", out), out
        assert re.search(prefix + r" tgdp trial 1/2 \w+ epoch 1/2: energy_distance=", out), out
    # guards the quiet console: none of the noise above
    found = {what: s for what, s in NOISE.items() if s in out}
    assert not found, (found, out[-3000:])
    # guards that the states the lines name are Optuna's: a trial said stopped early is PRUNED
    stopped = set(re.findall(r"tgdp trial \d/2 (\w+) stopped early", out))
    for label in ("n10", "n100"):
        for t in optuna_trials(study, f"quiet-{label}"):
            assert t.state.name == ("PRUNED" if t.user_attrs["tune_trial_id"] in stopped else "COMPLETE")
