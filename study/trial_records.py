"""The MLflow record of a study's trials: a parent run per unit, a run per trial, finalised from its result file.

``TrialRecords`` is used by the driver (the Tune callback ``study.callback`` and the reconciliation at the end
of each unit in ``study.runner``) and by ``study.report`` (which logs what a crashed or offline driver could
not). It sits next to ``study.tracking`` (the MLflow layout) and imports neither the runner nor the report.
Every call is idempotent: runs are found by their tags before one is created.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from study.paths import StudyPaths, method_label, run_name, units
from study.spec import StudySpec, dump_spec
from study.tracking import Tracker, flatten, trial_run_name


def resolved_params(spec: StudySpec, n: int, seed: int, params: Mapping[str, Any],
                    method: str = "tgdp") -> dict[str, Any]:
    """A trial's whole resolved config (data.*, every stage field, evaluation.*), flattened for MLflow params."""
    from tgdp.config import to_dict

    data_cfg, cfg = spec.resolved_config(n, seed, params, method=method)
    evaluation = {f"evaluation.{k}": v for k, v in (spec.evaluation or {}).items()}
    return {**{f"data.{k}": v for k, v in flatten(to_dict(data_cfg)).items()}, **flatten(to_dict(cfg)), **evaluation,
            **({"method": method} if method != "tgdp" else {})}


@dataclass
class TrialRecords:
    """The MLflow runs of one study's units and trials (driver side: never inside Ray workers)."""

    tracker: Tracker
    paths: StudyPaths
    spec: StudySpec
    parents: dict[str, str] = field(default_factory=dict)  # unit label -> its parent run id
    spec_text: str = field(init=False)  # the spec as YAML, logged with every finished trial
    _studies: dict[str, Any] = field(default_factory=dict)  # run label -> its Optuna study (for trial numbers)
    _numbers: dict[str, int] = field(default_factory=dict)  # Tune trial id -> Optuna trial number, once known

    def __post_init__(self) -> None:
        self.spec_text = dump_spec(self.spec)
        self._units = {label: (n, seed) for n, seed, label in units(self.spec)}
        # the label of each tuned method's Tune run (study.paths.method_label) -> (unit label, method)
        self._runs = {method_label(label, m): (label, m) for label in self._units for m in self.spec.tuned_methods}

    def parent(self, label: str) -> str:
        """The parent run of unit ``label`` (created RUNNING the first time)."""
        n, seed = self._units[label]
        self.parents[label] = self.tracker.parent(self.spec.name, label, n, seed)
        return self.parents[label]

    def trial_run(self, label: str, trial_id: str, params: Mapping[str, Any] | None) -> str:
        """The trial's run (RUNNING) under its unit's parent, with its searched ``params`` (the Tune config) and,
        when they are known, the resolved config they give. ``label``: a tuned method's run label."""
        unit, method = self._runs[label]
        n, seed = self._units[unit]
        if unit not in self.parents:
            self.parent(unit)
        resolved = resolved_params(self.spec, n, seed, params, method) if params else None
        name = trial_run_name(n, seed, self.trial_number(label, trial_id), method, trial_id)
        return self.tracker.trial_run(self.parents[unit], label, trial_id, name, dict(params or {}), resolved)

    def trial_number(self, label: str, trial_id: str) -> int | None:
        """The Optuna trial number of Tune trial ``trial_id`` (``study.search`` tags each Optuna trial with its
        Tune id), the number ``status`` and the report show; None when optuna.db has no such trial."""
        import optuna

        if trial_id in self._numbers:  # asked at every reported epoch: read optuna.db once per trial
            return self._numbers[trial_id]
        if label not in self._studies:
            if not self.paths.optuna_db.is_file():  # never create an Optuna database from here
                return None
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            try:
                self._studies[label] = optuna.load_study(study_name=run_name(self.spec, label),
                                                         storage=self.paths.optuna_url)
            except KeyError:  # the unit's study is not created yet
                return None
        for t in self._studies[label].get_trials(deepcopy=False):
            if t.user_attrs.get("tune_trial_id") == trial_id:
                self._numbers[trial_id] = t.number
                return t.number
        return None

    def finalize(self, label: str, trial_id: str, params: Mapping[str, Any] | None,
                 last: Mapping[str, Any] | None, status: str) -> None:
        """Log the trial's result file (if it has one: the final metrics, plots, guidance weights) or its
        last in-training report, and terminate its run with ``status``."""
        import torch

        run_id = self.trial_run(label, trial_id, params)
        path = self.paths.result(label, trial_id)
        result = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
        self.tracker.finish_trial(run_id, result, dict(last) if last else None, status, self.spec_text)


__all__ = ["TrialRecords", "resolved_params"]
