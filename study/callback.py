"""The Tune callback of a running study: progress lines and the trials' MLflow runs, in the driver."""

from __future__ import annotations

from pathlib import Path

from ray.tune import Callback

from study.paths import run_name
from study.signing import sign
from study.trial_records import TrialRecords

LIVE: dict[str, TrialRecords] = {}  # study root -> the running driver's records (the callback is pickled)


class StudyCallback(Callback):
    """Prints progress and logs trial runs to MLflow. Pickled into the Tune experiment, so it holds only
    names; the live ``TrialRecords`` come from ``LIVE`` (a resumed driver may use another tracking URI)."""

    def __init__(self, root: str, label: str) -> None:
        self.root, self.label = root, label
        self.best: tuple[float, str] | None = None

    def _records(self) -> TrialRecords:
        """The driving study's records; a callback restored from a moved or copied study's tuner.pkl holds
        the original's root: one driver drives one study, so that study's are used."""
        return LIVE[self.root] if self.root in LIVE or not LIVE else next(iter(LIVE.values()))

    def _run(self, trial) -> str:
        return self._records().trial_run(self.label, trial.trial_id, trial.config)

    def on_trial_start(self, iteration, trials, trial, **info):
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.config.items())
        print(f"[{self.label}] trial {trial.trial_id} started: {shown or '(fixed config)'}", flush=True)
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" in result and not result.get("final"):
            keep = {k: v for k, v in result.items() if k not in ("epoch", "training_iteration", "time_this_iter_s",
                                                                   "time_total_s", "timestamp", "pid", "proxy")}
            self._records().tracker.log_metrics(self._run(trial), keep, step=int(result["epoch"]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        records = self._records()
        records.finalize(self.label, trial.trial_id, trial.config, trial.last_result, "FINISHED")
        metric = records.spec.metrics[0]
        value = (trial.last_result or {}).get(metric)
        early = not (trial.last_result or {}).get("final")
        if isinstance(value, (int, float)):
            sign = 1 if records.spec.directions[0] == "minimize" else -1
            if self.best is None or sign * value < sign * self.best[0]:
                self.best = (value, trial.trial_id)
        best = f"best so far {metric}={self.best[0]:.4g} ({self.best[1]})" if self.best else ""
        what = f"stopped early at epoch {trial.last_result.get('epoch')}" if early and trial.last_result else "finished"
        print(f"[{self.label}] trial {trial.trial_id} {what}: {metric}={value if value is None else f'{value:.4g}'}"
              f"  | {best}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._records().finalize(self.label, trial.trial_id, trial.config, trial.last_result, "FAILED")
        print(f"[{self.label}] trial {trial.trial_id} FAILED (see {self.root}/ray)", flush=True)

    def get_state(self):
        """Tune calls this at each experiment checkpoint, after writing the experiment and searcher state
        to its driver staging directory (``<ray session>/artifacts/<time>/<run>/driver_artifacts``), which it
        then copies into ``<study>/ray/<run>``: sign those (``study.signing``). Returns None: the callback
        keeps no state of its own."""
        if not LIVE:  # not run by a study's driver
            return None
        from ray.train.constants import _get_ray_train_session_dir

        records = self._records()
        exp = run_name(records.spec, self.label)
        staged = sorted(Path(_get_ray_train_session_dir()).glob(f"*/{exp}/driver_artifacts"),
                        key=lambda p: p.stat().st_mtime)
        if staged:
            sign(records.paths, records.paths.ray / exp, source=staged[-1])
        return None

    def __getstate__(self):
        return {"root": self.root, "label": self.label, "best": None}
