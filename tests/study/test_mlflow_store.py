"""``study.mlflow_store``: a new study's sqlite store is a copy of a template migrated once."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

from study.mlflow_store import ensure_sqlite_store
from study.tracking import Tracker


def test_store_is_copied_from_one_template(tmp_path):
    templates = tmp_path / "cache"
    a, b = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    assert ensure_sqlite_store(f"sqlite:///{a}", templates)
    template = templates / f"mlflow-{mlflow.__version__}.db"
    made = template.stat().st_mtime_ns
    assert ensure_sqlite_store(f"sqlite:///{b}", templates)
    # guards "migrated once": the second study copies the same template, it is not rebuilt
    assert template.stat().st_mtime_ns == made and a.read_bytes() == b.read_bytes()
    # guards that the copy is a working store: the study's experiment and a run land in it, and in it only
    t = Tracker(f"sqlite:///{a}", "study-a", str(tmp_path / "art"))
    run_id, created = t.get_or_create("n10", kind="n")
    assert created and MlflowClient(f"sqlite:///{a}").get_run(run_id).info.experiment_id == t.experiment_id
    assert MlflowClient(f"sqlite:///{b}").get_experiment_by_name("study-a") is None
    # guards the existing store of a resumed study: never overwritten
    assert not ensure_sqlite_store(f"sqlite:///{a}", templates)
    assert MlflowClient(f"sqlite:///{a}").get_run(run_id) is not None
    # guards other tracking URIs (an MLflow server): left alone
    assert not ensure_sqlite_store("http://127.0.0.1:5000", templates)


def test_template_directory_and_an_unwritable_one(tmp_path, monkeypatch):
    from study.cache import CACHE_ENV
    from study.mlflow_store import template_dir

    # guards where the template lives: the shared stage cache when set (not a study's own, new every study)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "shared"))
    assert template_dir() == (tmp_path / "shared").resolve()
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert template_dir() == tmp_path / "xdg" / "tgdp-study"
    # guards the fallback: a template directory that cannot be made leaves the store to MLflow, nothing written
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = tmp_path / "s" / "mlflow.db"
    assert not ensure_sqlite_store(f"sqlite:///{target}", blocker / "sub") and not target.exists()
