"""A moved or copied study works on itself, never on the original it came from.

Three things inside a study record absolute paths, and each would lead ``report`` / ``resume`` / ``ui``
of a copy back to the original:

- the Optuna storage pickled into Tune's ``tuner.pkl`` and searcher state: restored as it was, it
  reconnected to (or, for a moved study, re-created) the original's ``optuna.db``. ``StudyStorage``
  pickles as "the optuna.db of the study this driver drives" (``drive``), so a restore reopens the
  copy's own;
- MLflow's experiment ``artifact_location`` and each run's ``artifact_uri`` in ``mlflow.db``:
  ``relocate_mlflow`` rewrites the original's ``<study>/mlartifacts`` prefix to the copy's before
  anything is logged (only for the study's own sqlite store; a shared server's runs stay as they are);
- ``state.json``: its paths inside the study are already relative (``study.paths.StudyPaths.write_state``).

Ray Tune resolves its own trial and checkpoint paths against the directory it restores from.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import optuna

from study.paths import StudyPaths

_DRIVEN: dict[str, str] = {}  # "optuna_url": the Optuna storage URL of the study this process drives


def drive(paths: StudyPaths) -> None:
    """Declare ``paths`` the study this process drives: unpickled ``StudyStorage``s open its optuna.db."""
    _DRIVEN["optuna_url"] = paths.optuna_url


def _reopen(url: str) -> "StudyStorage":
    return StudyStorage(_DRIVEN.get("optuna_url", url))


class StudyStorage(optuna.storages.RDBStorage):
    """The study's ``optuna.db`` storage; pickled by role, not by URL (see the module doc)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self.url,))


def relocate_mlflow(paths: StudyPaths, tracking_uri: str, experiment: str) -> int:
    """Point the study's MLflow experiment and runs at ``<study>/mlartifacts`` when ``mlflow.db`` (the study's
    own store) still names another study directory's; returns the number of runs rewritten (0: in place)."""
    if tracking_uri != paths.mlflow_url or not paths.mlflow_db.is_file():
        return 0
    new = paths.artifact_location
    con = sqlite3.connect(paths.mlflow_db)
    try:
        with con:
            row = con.execute("SELECT experiment_id, artifact_location FROM experiments WHERE name = ?",
                              (experiment,)).fetchone()
            if row is None or row[1] == new or not str(row[1]).endswith("/mlartifacts"):
                return 0
            exp_id, old = row
            con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (new, exp_id))
            cur = con.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                              "WHERE experiment_id = ? AND substr(artifact_uri, 1, ?) = ?",
                              (new, len(old) + 1, exp_id, len(old), old))
            return cur.rowcount
    finally:
        con.close()


__all__ = ["StudyStorage", "drive", "relocate_mlflow"]
