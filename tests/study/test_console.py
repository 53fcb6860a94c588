"""study/console.py and the trial process's unraisable-exception filter (study/trial.py), without Ray running.
The end-to-end console (the real CLI off a terminal) is tests/system/test_console.py."""

from __future__ import annotations

import gc
import io
import logging
import sys

import pytest

from study import console


@pytest.fixture
def restore_logging(monkeypatch):
    """configure() changes process-wide state: put the loggers back; monkeypatch restores the environment."""
    for var in ("RAY_AIR_NEW_OUTPUT", "MLFLOW_LOGGING_LEVEL", "RAY_COLOR_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    levels = {name: logging.getLogger(name).level for name in console.NOISY_LOGGERS}
    import optuna

    before = optuna.logging.get_verbosity()
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    optuna.logging.set_verbosity(before)


def test_quiet_by_default_and_verbose_leaves_the_libraries_alone(restore_logging, monkeypatch):
    import os

    import optuna

    monkeypatch.setattr(sys, "stdout", io.StringIO())  # not a terminal
    console.configure(verbose=True)
    # guards --verbose: Tune's own output engine and the libraries' levels untouched; only colours off a terminal
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ and os.environ["RAY_COLOR_PREFIX"] == "0"
    console.configure(verbose=False)
    # guards the quiet default: Tune's legacy reporter (silent at verbose=0), INFO lines of the libraries off
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0" and os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING
    assert all(logging.getLogger(n).getEffectiveLevel() == logging.WARNING for n in console.NOISY_LOGGERS)
    assert console.ray_logging_level(False) == logging.WARNING and console.ray_logging_level(True) == logging.INFO


def test_startup_lines_say_where_to_look():
    lines = console.startup_lines("s", "/x/s", "sqlite:////x/s/mlflow.db", "127.0.0.1:8265", "tgdp-study")
    # guards the three places, once each: results (and the status command), the MLflow UI command, the dashboard
    assert lines == ["study s", "  results        /x/s  (`tgdp-study status /x/s`)",
                     "  MLflow UI      tgdp-study ui /x/s", "  Ray dashboard  http://127.0.0.1:8265"]
    other = console.startup_lines("s", "/x/s", "http://mlflow:5000", None, "tgdp-study")
    # guards a remote tracking server named, and a Ray without dashboard said so
    assert other[2].endswith("(tracking http://mlflow:5000)") and other[3] == "  Ray dashboard  not running"


def test_a_stopped_trials_system_exit_is_not_printed_but_other_unraisables_are(monkeypatch, capsys):
    from study.trial import _ignore_stop_exit

    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    _ignore_stop_exit()
    _ignore_stop_exit()  # idempotent: one filter, not a chain

    class Raises:
        def __init__(self, exc):
            self.exc = exc

        def __del__(self):
            raise self.exc

    Raises(SystemExit(0))
    gc.collect()
    # guards the "Exception ignored ... SystemExit" of an ASHA stop: dropped
    assert "Exception ignored" not in capsys.readouterr().err
    Raises(ValueError("real problem"))
    gc.collect()
    # guards that every other unraisable exception is still printed as Python does
    assert "ValueError: real problem" in capsys.readouterr().err
