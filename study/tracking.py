"""MLflow layout of a study, logged from the driver only (never from workers).

    experiment <study>                  pre-created with the absolute artefact location <study>/mlartifacts
      run <unit label> (n10, n10-s1)     parent run per unit (tags kind=n): the best trial's values per method
        run n10-s0-t03-tgdp              child run per trial (kind=trial; t03 = its Optuna trial number):
                                         flattened resolved config, val_* by guidance epoch, the final val_*
                                         and test_*, plots, guidance checkpoint
        run n10-s0-finetune              baseline / oracle runs (kind=baseline): val_*, test_*
      run summary                        comparison table (CSV + Markdown), figures, best values by n (kind=summary)

Metric names: ``study.metric_names``. Every run is found again by its tags before one is created, so a resume or
a second ``report`` never duplicates runs (names are for people; the tags are the identity);
``close_running`` marks runs left RUNNING by a killed driver as KILLED. Early-stopped trials end FINISHED with
the tag ``stopped_early=true``. Nothing is written under the working directory: MLflow's own "Default"
experiment of a new sqlite store also gets its artefact location inside the study.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from study import metric_names


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"guidance": {"width": 32}} -> {"guidance.width": 32}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def trial_run_name(n: int, seed: int, number: int | None, method: str, trial_id: str) -> str:
    """``n100-s0-t03-tgdp``: unit, Optuna trial number (the Tune id when Optuna has none) and tuned method."""
    return f"n{n}-s{seed}-{f't{number:02d}' if number is not None else trial_id}-{method}"


def baseline_run_name(n: int, seed: int, method: str) -> str:
    """``n100-s0-vanilla``: the run of a baseline or oracle of one unit."""
    return f"n{n}-s{seed}-{method}"


class Tracker:
    """The MLflow side of one study (driver process)."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str) -> None:
        self.uri = tracking_uri
        if tracking_uri.startswith("sqlite:"):
            # A new store creates MLflow's "Default" experiment with its artefacts at <cwd>/mlruns unless given
            # a root: opening it first with the study's keeps every experiment's artefacts inside the study.
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            SqlAlchemyStore(tracking_uri, artifact_location)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp is not None else self.client.create_experiment(
            experiment, artifact_location=artifact_location)

    # --- finding runs -----------------------------------------------------------------------------
    def find(self, **tags: Any) -> Any | None:
        flt = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=flt, max_results=2)
        return runs[0] if runs else None

    def get_or_create(self, name: str, parent: str | None = None, **tags: Any) -> tuple[str, bool]:
        """(run id, created) of the run with ``tags``; a new run is RUNNING."""
        run = self.find(**tags)
        if run is not None:
            return run.info.run_id, False
        all_tags = {k: str(v) for k, v in tags.items()}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id, True

    def set_status(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status) if status != "RUNNING" else \
            self.client.update_run(run_id, status="RUNNING")

    def close_running(self, status: str = "KILLED") -> int:
        """Terminate every run of the experiment still RUNNING (after a crash); returns the count."""
        runs = self.client.search_runs([self.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                       max_results=10000)
        for r in runs:
            self.client.set_terminated(r.info.run_id, status=status)
        return len(runs)

    # --- logging helpers ---------------------------------------------------------------------------
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        existing = self.client.get_run(run_id).data.params
        items = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, Any], step: int = 0, *, once: bool = False) -> None:
        """Log the finite numbers of ``metrics`` at ``step``. ``once``: skip a name that already has this value at
        ``step`` (a second ``report`` or a reconciliation logs the same values again; a changed value is logged)."""
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
        if once:
            items = [m for m in items if all((h.step, h.value) != (m.step, m.value)
                                       for h in self.client.get_metric_history(run_id, m.key))]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i:i + 500])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: Path, subdir: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), subdir)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    # --- the study layout --------------------------------------------------------------------------
    def parent(self, study: str, label: str, n: int, seed: int) -> str:
        run_id, created = self.get_or_create(label, kind="n", study=study, label=label)
        if created:
            self.log_params(run_id, {"n": n, "seed": seed})
        return run_id

    def trial_run(self, parent_id: str, label: str, trial_id: str, name: str, params: dict[str, Any],
                  resolved: dict[str, Any] | None = None) -> str:
        """The child run ``name`` of a trial (RUNNING); params = searched values (param.*) + the resolved config."""
        run_id, created = self.get_or_create(name, parent=parent_id, kind="trial", label=label, trial_id=trial_id)
        if not created:
            self.set_status(run_id, "RUNNING")
        self.log_params(run_id, {**{f"param.{k}": v for k, v in params.items()}, **(resolved or {})})
        return run_id

    def finish_trial(self, run_id: str, result: dict[str, Any] | None, last: dict[str, Any] | None,
                     status: str, spec_text: str) -> None:
        """Log the final metrics and artefacts of a trial (from its result.pt) and terminate its run."""
        from study import plots

        tags = {"stopped_early": str(result is None and status == "FINISHED").lower()}
        if result is not None and self.client.get_run(run_id).data.tags.get("finalized") != "true":
            self.log_params(run_id, {f"data.{k}": v for k, v in flatten(result["data"]).items()})
            self.log_params(run_id, flatten(result["config"]))
            # the final evaluation as the last point of the val_* history (step epochs + 1, as reported to Tune)
            final = result["epochs"] + 1
            self.log_metrics(run_id, metric_names.split("val", result["validation"]), step=final)
            self.log_metrics(run_id, metric_names.split("test", result["test"]), step=final)
            for row in result.get("rows", []):
                if row["stage"] != "guidance":  # the guidance epochs were logged as they were reported
                    self.log_metrics(run_id, metric_names.stage_metrics(row), step=row["epoch"])
            self.log_text(run_id, spec_text, "spec.yaml")
            with tempfile.TemporaryDirectory() as d:
                d = Path(d)
                p = plots.samples_plot(result["samples"], result["data"], d / "samples.png",
                                       f"trial {result['trial_id']} (n={result['n']})")
                if p:
                    self.log_artifact(run_id, p, "plots")
                if result.get("ratio_grid") is not None:
                    self.log_artifact(run_id, plots.ratio_plot(result["ratio_grid"], d / "log_ratio_field.png"),
                                      "plots")
                import torch
                part = "guidance" if "guidance" in result else "model"  # tgdp's h, or a tuned baseline's net
                torch.save({part: result.get(part) or {}, "config": result["config"]}, d / f"{part}.pt")
                self.log_artifact(run_id, d / f"{part}.pt", "checkpoint")
            tags["finalized"] = "true"
        elif last:  # stopped early or failed: its last report, unless the callback logged it already
            self.log_metrics(run_id, metric_names.epoch_metrics(last), step=int(last.get("epoch", 0)), once=True)
        self.set_tags(run_id, tags)
        self.set_status(run_id, status)

    def baseline_run(self, parent_id: str, label: str, entry: dict[str, Any]) -> str:
        """A FINISHED run per baseline/oracle and n (idempotent)."""
        from study import plots

        method = entry["method"]
        name = baseline_run_name(entry["n"], entry["seed"], method)
        run_id, created = self.get_or_create(name, parent=parent_id, kind="baseline", label=label, method=method)
        if created:
            self.log_params(run_id, {"method": method, "n": entry["n"], "seed": entry["seed"], "cache_key": entry["key"]})
            self.log_metrics(run_id, metric_names.split("val", entry["validation"]))
            self.log_metrics(run_id, metric_names.split("test", entry["test"]))
            with tempfile.TemporaryDirectory() as d:
                p = plots.samples_plot(entry["samples"], entry["data"], Path(d) / "samples.png", f"{method} ({label})")
                if p:
                    self.log_artifact(run_id, p, "plots")
            self.set_status(run_id, "FINISHED")
        return run_id
