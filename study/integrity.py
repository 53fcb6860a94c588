"""Checks of an existing study directory's own files before a command uses them.

``open_study`` is what every command on an existing study (resume, status, report, best, evaluate, ui)
opens it with: ``study.paths.open_study_dir`` (spec.yaml present) and then, without writing anything,

- no symlink among the study's own top-level entries (``TOP_LEVEL``): sqlite, MLflow and Ray would
  write through one; ``study.safe_io`` refuses the same for single files;
- ``state.json`` valid JSON (``StudyPaths.read_state``; ``study.spec.read_study_spec`` refuses a missing
  ``spec.sha256``: without it a changed spec would pass unnoticed);
- ``optuna.db`` and a sqlite ``mlflow.db``, when present, are SQLite files holding their store's tables:
  a 0-byte, truncated or foreign file is named with what is wrong instead of being taken for "not
  started" (Optuna and MLflow would silently write a fresh schema into it).

A problem is a ``StudyIntegrityError`` (a ``UserError``: one line, exit 2).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from study import UserError
from study.paths import STATE_FILE, StudyPaths, open_study_dir
from study.safe_io import no_symlink_below
from study.signing import MANIFEST

REPORT_LOCK = "report.lock"  # held by ``study.report.write_report``
TOP_LEVEL = ("spec.yaml", "spec.sha256", STATE_FILE, "lock", "optuna.db", "mlflow.db", MANIFEST, REPORT_LOCK,
             "mlartifacts", "ray", "cache", "report", "trials", "evaluation")
SQLITE_MAGIC = b"SQLite format 3\x00"
OPTUNA_TABLES = {"studies", "trials", "version_info"}
MLFLOW_TABLES = {"experiments", "runs", "alembic_version"}


class StudyIntegrityError(UserError):
    """A study file is missing, damaged or foreign."""


def sqlite_problem(db: Path, tables: set[str]) -> str | None:
    """What is wrong with ``db`` as a store holding ``tables`` (read-only), or None when it looks right."""
    try:
        with open(db, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if not head:
        return "empty (0 bytes)"
    if head != SQLITE_MAGIC:
        return "not an SQLite database"
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.Error as e:
        return f"a damaged SQLite database ({e})"
    missing = sorted(tables - found)
    return f"not this store's database (no table {', '.join(missing)})" if missing else None


def check_study_files(paths: StudyPaths) -> None:
    """Refuse a study whose own files are symlinked, missing, damaged or foreign (see the module doc)."""
    for name in TOP_LEVEL:
        no_symlink_below(paths.root, paths.root / name)  # an UnsafePathError naming it
    state = paths.read_state()  # a StudyPathError for a truncated or foreign state.json
    stores = [(paths.optuna_db, OPTUNA_TABLES, "Optuna")]
    uri = state.get("tracking_uri", paths.mlflow_url)
    if uri.startswith("sqlite:///"):
        stores.append((Path(uri[len("sqlite:///"):]), MLFLOW_TABLES, "MLflow"))
    for db, tables, what in stores:
        if db.exists() and (problem := sqlite_problem(db, tables)) is not None:
            raise StudyIntegrityError(f"{db}: {problem}; expected the study's {what} store. Restore it from a "
                                      "backup (or remove it to start that store afresh)")


def open_study(path: str | Path) -> StudyPaths:
    """An existing study directory whose own files pass ``check_study_files``."""
    paths = open_study_dir(path)
    check_study_files(paths)
    return paths


__all__ = ["REPORT_LOCK", "StudyIntegrityError", "check_study_files", "open_study", "sqlite_problem"]
