"""A new study's sqlite MLflow store, copied from an empty, migrated template made once per MLflow version.

Creating an MLflow sqlite store runs every alembic migration of its schema (25 s measured on the loaded
2-core box, a large part of a small study's fixed start-up), again for every study. The empty store after
the migrations is the same file each time, so it is made once (``mlflow-<version>.db`` in the template
directory) and copied (milliseconds). The template directory is ``$TGDP_STUDY_CACHE_DIR`` when set (the
stage cache shared by a user's studies), else ``$XDG_CACHE_HOME/tgdp-study`` (``~/.cache/tgdp-study``): a
study's own cache directory is new with every study. When it cannot be written, MLflow creates the store
in place as before. The template's Default experiment (id 0) keeps the artefact root of its creation;
studies never use it (each logs to its own experiment with an absolute artefact location).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SQLITE = "sqlite:///"


def template_dir() -> Path:
    """Where the templates live (module doc)."""
    from study.cache import CACHE_ENV

    shared = os.environ.get(CACHE_ENV)
    if shared:
        return Path(shared).expanduser().resolve()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "tgdp-study"


def ensure_sqlite_store(tracking_uri: str, templates: str | Path | None = None) -> bool:
    """Put the migrated empty store at the path of ``tracking_uri`` when it is a sqlite URI whose file does
    not exist yet; True when copied. Other URIs (a server, an existing study's store) are left alone, and so
    is everything when the template directory (``templates``, default ``template_dir()``) is not writable."""
    if not tracking_uri.startswith(SQLITE):
        return False
    target = Path(tracking_uri[len(SQLITE):])
    if target.exists():
        return False
    try:
        template = _template(Path(templates) if templates is not None else template_dir())
    except OSError:  # read-only home or cache: MLflow migrates the study's own store, as without a template
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(template, tmp)
    os.replace(tmp, target)  # atomic: a reader sees no store or the whole store
    return True


def _template(template_dir: Path) -> Path:
    """``<template_dir>/mlflow-<version>.db``, created (all migrations) when missing; safe for concurrent
    drivers (each builds its own temporary file, the last rename wins, the files are equivalent)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    template = template_dir / f"mlflow-{mlflow.__version__}.db"
    if template.is_file():
        return template
    template_dir.mkdir(parents=True, exist_ok=True)
    tmp = template_dir / f".mlflow-{mlflow.__version__}.{os.getpid()}.tmp.db"
    tmp.unlink(missing_ok=True)
    MlflowClient(tracking_uri=f"{SQLITE}{tmp}").get_experiment("0")  # creates the tables: every migration
    os.replace(tmp, template)
    return template


__all__ = ["ensure_sqlite_store"]
