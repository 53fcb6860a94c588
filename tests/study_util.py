"""Helpers shared by the study-system tests: tiny specs and MLflow / Optuna inspection."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "search_spaces" / "gmm_smoke.yaml"
# Ray as a study runs it: token authentication, one token for the test session (the drivers the tests start
# inherit it, so a test can also join their Ray); never RAY_AUTH_MODE=disabled, whatever the shell set
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
# the drivers the tests start sign their Tune state (study.signing) with a test secret, not the user's own
os.environ.setdefault("TGDP_STUDY_SECRET_FILE",
                      str(Path(tempfile.gettempdir()) / f"tgdp-study-tests-{os.getuid()}" / "secret"))


def tiny_spec(tmp_path: Path, name: str, **changes: Any) -> Path:
    """gmm_smoke.yaml with top-level keys replaced (nested dicts merged one level), written to tmp_path."""
    d = yaml.safe_load(SMOKE.read_text())
    d["name"] = name
    for k, v in changes.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) and k != "space" else v
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


def runs(tracking_uri: str, experiment: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri)
    e = c.get_experiment_by_name(experiment)
    return c.search_runs([e.experiment_id], max_results=1000) if e else []


def by_kind(rs: list[Any], kind: str) -> list[Any]:
    return [r for r in rs if r.data.tags.get("kind") == kind]


def artifacts(tracking_uri: str, run_id: str, path: str | None = None) -> list[str]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri)
    out = []
    for a in c.list_artifacts(run_id, path):
        out += artifacts(tracking_uri, run_id, a.path) if a.is_dir else [a.path]
    return out


def optuna_trials(study_dir: Path, name: str) -> list[Any]:
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'optuna.db'}").trials
