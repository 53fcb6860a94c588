"""The Tune callback of a running study: progress events (``study.progress``) and the trials' MLflow runs, in
the driver."""

from __future__ import annotations

from pathlib import Path

from ray.tune import Callback

from study import metric_names
from study.extend import tune_run
from study.outcomes import FAILED, FINISHED, STOPPED
from study.progress import LIVE as PROGRESS
from study.signing import sign
from study.trial_records import TrialRecords

LIVE: dict[str, TrialRecords] = {}  # study root -> the running driver's records (the callback is pickled)


class StudyCallback(Callback):
    """Feeds the progress and logs trial runs to MLflow. Pickled into the Tune experiment, so it holds only
    names; the live ``TrialRecords`` and ``Progress`` come from the registries (a resumed driver may use another
    tracking URI)."""

    def __init__(self, root: str, label: str) -> None:
        self.root, self.label = root, label

    def _live(self, registry: dict):
        """The driving study's entry of ``registry``; a callback restored from a moved or copied study's
        tuner.pkl holds the original's root: one driver drives one study, so that study's is used."""
        return registry[self.root] if self.root in registry or not registry else next(iter(registry.values()))

    def _records(self) -> TrialRecords:
        return self._live(LIVE)

    def _progress(self):
        return self._live(PROGRESS)

    def _run(self, trial) -> str:
        return self._records().trial_run(self.label, trial.trial_id, trial.config)

    def _shown(self, result: dict) -> dict:
        """The value a progress line shows: the objective, or on an in-training proxy report (ECG: the objective
        is NaN there) the proxy ASHA stops on, named."""
        spec = self._records().spec
        if not result.get("proxy"):
            return {"value": result.get(spec.metrics[0])}
        from study.experiments import experiment_for

        proxy, _ = experiment_for(spec).asha_metric()
        return {"value": result.get(proxy), "metric": proxy}

    @staticmethod
    def _k(trials, trial) -> int:
        """The trial's number k of k/N in its Tune run (creation order; restored trials keep theirs)."""
        return next((i for i, t in enumerate(trials, 1) if t is trial), len(trials))

    def on_trial_start(self, iteration, trials, trial, **info):
        self._progress().trial_started(self._k(trials, trial), trial.trial_id, trial.config)
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" in result and not result.get("final"):  # the final evaluation is logged from result.pt
            self._progress().trial_epoch(self._k(trials, trial), trial.trial_id, int(result["epoch"]),
                                            **self._shown(result))
            self._records().tracker.log_metrics(self._run(trial), metric_names.epoch_metrics(result),
                                                step=int(result["epoch"]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        records = self._records()
        records.finalize(self.label, trial.trial_id, trial.config, trial.last_result, "FINISHED")
        last = trial.last_result or {}
        outcome = FINISHED if last.get("final") else STOPPED
        self._progress().trial_ended(self._k(trials, trial), trial.trial_id, outcome, last.get("epoch"),
                                        **self._shown(last))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._records().finalize(self.label, trial.trial_id, trial.config, trial.last_result, "FAILED")
        self._progress().trial_ended(self._k(trials, trial), trial.trial_id, FAILED, None, None,
                                        note=f"(see {self.root}/ray)")

    def get_state(self):
        """Tune calls this at each experiment checkpoint, after writing the experiment and searcher state
        to its driver staging directory (``<ray session>/artifacts/<time>/<run>/driver_artifacts``), which it
        then copies into ``<study>/ray/<run>``: sign those (``study.signing``). Returns None: the callback
        keeps no state of its own."""
        if not LIVE:  # not run by a study's driver
            return None
        from ray.train.constants import _get_ray_train_session_dir

        records = self._records()
        exp, _ = tune_run(records.spec, records.paths, self.label)  # <study>-<run>, or its extension run
        staged = sorted(Path(_get_ray_train_session_dir()).glob(f"*/{exp}/driver_artifacts"),
                        key=lambda p: p.stat().st_mtime)
        if staged:
            sign(records.paths, records.paths.ray / exp, source=staged[-1])
        return None

    def __getstate__(self):
        return {"root": self.root, "label": self.label}
