"""A quiet console for ``run`` / ``resume``: our progress lines (``study.progress``) and nothing else, unless
``--verbose``.

What each setting silences, and why it is safe to:

- MLflow's and alembic's INFO lines ("Creating initial MLflow database tables"): the store is created, not news;
- Optuna's INFO lines ("A new study created in RDB"): the progress names each unit's Tune run;
- the ``ray`` logger's INFO lines ("Started a local Ray instance"): the start-up lines say where the dashboard is;
- Tune's configuration box ("Search algorithm SearchGenerator") and its TensorBoard hint (into Ray's session
  directory, while the study's events are under the study): ``RAY_AIR_NEW_OUTPUT=0`` selects Tune's legacy
  reporter, which ``RunConfig(verbose=0)`` silences (the new one prints the box at every verbosity);
- ANSI colours around the "(run_trial pid=...)" prefix of forwarded worker lines when stdout is not a terminal:
  ``RAY_COLOR_PREFIX=0`` (logs and CI keep plain text; a terminal keeps its colours).

Warnings and errors still come through: loggers are set to WARNING, never off, and worker output still reaches
the driver (``log_to_driver``). The deprecation warning of every trial and the "Exception ignored ...
SystemExit" of a stopped trial are fixed at their source (``study.ray_reporter``, ``study.trial``).
"""

from __future__ import annotations

import logging
import os
import sys

NOISY_LOGGERS = ("mlflow", "alembic", "ray", "ray.tune", "ray.train", "ray.air")


def configure(verbose: bool) -> None:
    """Set up the driver's console before MLflow, Optuna and Ray start (environment) and after they are
    imported (loggers). ``verbose``: leave every library at its own level (the output before issue 15)."""
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if verbose:
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow configures its loggers
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def ray_logging_level(verbose: bool) -> int:
    """The ``logging_level`` for ``ray.init`` (it resets the ``ray`` logger's level)."""
    return logging.INFO if verbose else logging.WARNING


def startup_lines(name: str, root: str, tracking_uri: str, dashboard_url: str | None, prog: str) -> list[str]:
    """Where to look, printed once when a study starts: results, the MLflow UI command, the Ray dashboard
    (``dashboard_url`` as Ray gives it, without a scheme; None or empty when Ray runs without one)."""
    if dashboard_url and "://" not in dashboard_url:
        dashboard_url = "http://" + dashboard_url
    tracking = "" if tracking_uri.startswith("sqlite:") else f"  (tracking {tracking_uri})"
    return [f"study {name}",
            f"  results        {root}  (`{prog} status {root}`)",
            f"  MLflow UI      {prog} ui {root}{tracking}",
            f"  Ray dashboard  {dashboard_url or 'not running'}"]


__all__ = ["configure", "ray_logging_level", "startup_lines"]
