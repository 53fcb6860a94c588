"""Drive a study: per (n, seed) one Optuna study searched by one Ray Tune run of Train-run trials.

Flow of ``run_study`` / ``resume_study`` (the driver holds ``<study>/lock`` throughout):

1. ``ray.init`` (local, ``resources.num_cpus``) or join ``--address``; check the trials fit.
2. For each unit (n, seed), labelled ``n<n>`` (``n<n>-s<seed>`` with several seeds):
   a. the shared stages (source model, baselines and oracles, the unsearched classifier) as one Ray
      Train run filling the stage cache (skipped when every entry is cached); baseline MLflow runs;
   b. a Tune run ``<study>-<label>`` (``OptunaSearch`` on ``optuna.db``, study ``<study>-<label>``;
      ASHA on the reported guidance epoch, first objective if several) of ``study.trial.run_trial``;
      on resume ``Tuner.restore(resume_unfinished=True, resume_errored=True)``; units whose Tune run
      finished (``trials/<label>/DONE``) are skipped;
   c. reconciliation: every trial with a ``result.pt`` has a finalised MLflow run; Optuna trials left
      RUNNING by a killed driver (never handed to Tune) are marked FAIL.
3. The report (``study.report.write_report``): test-draw table, figures, MLflow summary run.

Ctrl-C: Tune stops gracefully; the driver prints how to resume and exits 130.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from study import UserError
from study.cache import StageCache, classifier_key, classifier_searched, resolve_cache_dir, source_key
from study.paths import StudyPaths, open_study_dir
from study.spec import StudySpec, check_resources, dump_spec, read_study_spec, resource_issues, write_spec

PROG = "tgdp-study"
STATE_FILE = "state.json"  # cache dir and tracking URI chosen at creation (resume reuses them)
_ACTIVE: dict[str, Any] = {}  # study root -> live driver context, looked up by the (pickled) Tune callback


def unit_label(spec: StudySpec, n: int, seed: int) -> str:
    return f"n{n}" if len(spec.factors.seeds) == 1 else f"n{n}-s{seed}"


def units(spec: StudySpec) -> list[tuple[int, int, str]]:
    return [(n, s, unit_label(spec, n, s)) for n in spec.factors.n for s in spec.factors.seeds]


def optuna_study_name(spec: StudySpec, label: str) -> str:
    return f"{spec.name}-{label}"


def trials_dir(paths: StudyPaths, label: str) -> Path:
    return paths.root / "trials" / label


# --- lock ----------------------------------------------------------------------------------------------

@contextmanager
def study_lock(paths: StudyPaths) -> Iterator[None]:
    """Exclusive ``fcntl.flock`` on ``<study>/lock`` holding our pid; a second driver gets a UserError."""
    paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise UserError(f"study {paths.root} is in use by another process (pid {holder}); wait for it "
                            f"or stop it, then `{PROG} resume {paths.root}`") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


# --- Optuna search with the Tune trial id recorded on each Optuna trial -----------------------------------

def make_search(spec: StudySpec, label: str, paths: StudyPaths, rt: dict[str, Any]):
    import optuna

    from study.space import define_by_run, make_sampler

    modes = ["min" if d == "minimize" else "max" for d in spec.directions]
    multi = spec.multi_objective
    storage = optuna.storages.RDBStorage(paths.optuna_url)
    if spec.initial_trials:
        enqueue_initial_trials(spec, storage, optuna_study_name(spec, label))
    return TaggingOptunaSearch(
        space=functools.partial(define_by_run, space=dict(spec.space), constants={"_rt": rt}),
        metric=spec.metrics if multi else spec.metrics[0], mode=modes if multi else modes[0],
        sampler=make_sampler(spec.sampler, spec.space, seed=spec.sampler_seed),
        study_name=optuna_study_name(spec, label),
        storage=storage)


def enqueue_initial_trials(spec: StudySpec, storage: Any, study_name: str) -> None:
    """Queue ``spec.initial_trials`` in a *new* Optuna study: a resumed one already holds them (run, running
    or still waiting), and queueing again would run them twice."""
    import optuna

    from study.space import initial_trial_params

    study = optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True,
                                directions=list(spec.directions))
    if study.trials:
        return
    for point in spec.initial_trials or ():
        study.enqueue_trial(initial_trial_params(spec.space, point), user_attrs={"initial_trial": True})


from ray.tune.search.optuna import OptunaSearch as _OptunaSearch  # noqa: E402  (ray is a dependency)


class TaggingOptunaSearch(_OptunaSearch):
    """OptunaSearch that records ``tune_trial_id`` on each Optuna trial (reports join on it)."""

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        ot = self._ot_trials.get(trial_id)
        if ot is not None and config is not None:
            ot.set_user_attr("tune_trial_id", trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if result.get("proxy"):  # an in-training proxy report (ECG: feat_* only; the objective is NaN there)
            return
        # After a driver crash Tune may resume a trial Optuna already completed (Tune's experiment
        # state is saved periodically, Optuna's at once): its intermediate values are then refused.
        import optuna

        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        # A trial stopped by ASHA on a proxy report has no objective value: Optuna records it PRUNED.
        super().on_trial_complete(trial_id, None if result and result.get("proxy") else result, error)


# --- the Tune callback: progress lines and MLflow, in the driver -------------------------------------------

from ray.tune import Callback as _TuneCallback  # noqa: E402
from ray.tune.schedulers import ASHAScheduler  # noqa: E402


class StudyCallback(_TuneCallback):
    """Prints progress and logs trial runs to MLflow. Pickled into the Tune experiment, so it holds only
    names; the live ``Tracker`` comes from ``_ACTIVE`` (a resumed driver may use another tracking URI)."""

    def __init__(self, root: str, label: str) -> None:
        self.root, self.label = root, label
        self.best: tuple[float, str] | None = None

    def _ctx(self) -> dict[str, Any]:
        return _ACTIVE[self.root]

    def _run(self, trial) -> str:
        ctx = self._ctx()
        from study.trial import trial_params
        return ctx["tracker"].trial_run(ctx["parents"][self.label], self.label, trial.trial_id,
                                        trial_params(trial.config), resolved_params(ctx, trial.config))

    def on_trial_start(self, iteration, trials, trial, **info):
        from study.trial import trial_params
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in trial_params(trial.config).items())
        print(f"[{self.label}] trial {trial.trial_id} started: {shown or '(fixed config)'}", flush=True)
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        ctx = self._ctx()
        if "epoch" in result and not result.get("final"):
            keep = {k: v for k, v in result.items() if k not in ("epoch", "training_iteration", "time_this_iter_s",
                                                                   "time_total_s", "timestamp", "pid", "proxy")}
            ctx["tracker"].log_metrics(self._run(trial), keep, step=int(result["epoch"]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        ctx = self._ctx()
        finalize_trial(ctx, self.label, trial.trial_id, trial.config, trial.last_result, "FINISHED")
        metric = ctx["spec"].metrics[0]
        value = (trial.last_result or {}).get(metric)
        early = not (trial.last_result or {}).get("final")
        if isinstance(value, (int, float)):
            sign = 1 if ctx["spec"].directions[0] == "minimize" else -1
            if self.best is None or sign * value < sign * self.best[0]:
                self.best = (value, trial.trial_id)
        best = f"best so far {metric}={self.best[0]:.4g} ({self.best[1]})" if self.best else ""
        what = f"stopped early at epoch {trial.last_result.get('epoch')}" if early and trial.last_result else "finished"
        print(f"[{self.label}] trial {trial.trial_id} {what}: {metric}={value if value is None else f'{value:.4g}'}"
              f"  | {best}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        finalize_trial(self._ctx(), self.label, trial.trial_id, trial.config, trial.last_result, "FAILED")
        print(f"[{self.label}] trial {trial.trial_id} FAILED (see {self.root}/ray)", flush=True)

    def __getstate__(self):
        return {"root": self.root, "label": self.label, "best": None}


def resolved_params(ctx: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The trial's whole resolved config (data.* and every stage field), flattened for MLflow params."""
    from study.tracking import flatten
    from study.trial import RT, trial_params
    from tgdp.config import to_dict

    rt = config[RT]
    spec = ctx["spec"]
    data_cfg, cfg = spec.resolved_config(rt["n"], rt["seed"], trial_params(config))
    evaluation = {f"evaluation.{k}": v for k, v in (spec.evaluation or {}).items()}
    return {**{f"data.{k}": v for k, v in flatten(to_dict(data_cfg)).items()}, **flatten(to_dict(cfg)), **evaluation}


def finalize_trial(ctx: dict[str, Any], label: str, trial_id: str, config: dict[str, Any],
                   last: dict[str, Any] | None, status: str) -> None:
    """Log a finished trial's result.pt (if any) to its MLflow run and terminate the run. Idempotent."""
    import torch

    from study.trial import RESULT_FILE, trial_params

    tracker = ctx["tracker"]
    run_id = tracker.trial_run(ctx["parents"][label], label, trial_id, trial_params(config or {}),
                               resolved_params(ctx, config) if config else None)
    path = trials_dir(ctx["paths"], label) / trial_id / RESULT_FILE
    result = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
    tracker.finish_trial(run_id, result, last, status, ctx["spec_text"])


# --- driving -------------------------------------------------------------------------------------------

def _runtime(spec: StudySpec, paths: StudyPaths, n: int, seed: int, label: str, cache_dir: Path) -> dict[str, Any]:
    from study.spec import spec_dict
    from study.trial import EVAL_SAMPLES

    r = spec.resources
    return {"spec": spec_dict(spec), "spec_file": str(paths.spec), "n": n, "seed": seed, "seeds": [seed],
            "cache_dir": str(cache_dir), "trials_dir": str(trials_dir(paths, label)),
            "train_storage": str(paths.ray / "_train_runs"), "workers": r.workers_per_trial,
            "cpus_per_worker": r.cpus_per_worker, "gpus_per_worker": r.gpus_per_worker,
            "cpus_per_trial": r.cpus_per_trial, "eval_samples": EVAL_SAMPLES,
            "classifier_searched": classifier_searched(spec.space)}


def shared_missing(spec: StudySpec, n: int, seed: int, cache: StageCache) -> bool:
    from study.experiments import experiment_for

    exp = experiment_for(spec)
    data_cfg, cfg = spec.resolved_config(n, seed)
    need = [("source", source_key(data_cfg, cfg))] + [("baseline", exp.baseline_key(m, data_cfg, cfg))
                                                       for m in exp.baselines]
    if not classifier_searched(spec.space):
        need.append(("classifier", classifier_key(data_cfg, cfg)))
    return any(not cache.has(kind, key) for kind, key in need)


def _init_ray(spec: StudySpec, address: str | None) -> bool:
    """Start or join Ray; returns True when we started it (and so shut it down)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    from study.trial import quiet_ray_logs

    quiet_ray_logs()
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            r = spec.resources
            ray.init(num_cpus=int(r.num_cpus) if r.num_cpus else os.cpu_count(),
                     num_gpus=int(r.num_gpus) if r.num_gpus is not None else None, log_to_driver=True)
        started = True
    total = ray.cluster_resources()
    issues = resource_issues(spec.resources, float(total.get("CPU", 0)), float(total.get("GPU", 0)),
                             what="the Ray cluster")
    if issues:
        if started:
            ray.shutdown()
        from study import SpecError
        raise SpecError(spec.source, issues)
    return started


def _mark_orphans_failed(paths: StudyPaths, study_name: str) -> int:
    """Optuna trials still RUNNING after their Tune run ended were never handed to a Tune trial: FAIL."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=paths.optuna_url)
    except KeyError:
        return 0
    count = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        count += 1
    return count


def _run_unit(ctx: dict[str, Any], n: int, seed: int, label: str) -> bool:
    """Shared stages, then the Tune run of one unit; True when the unit finished (not interrupted)."""
    from ray import tune

    from study.trial import run_shared, run_trial

    spec, paths, tracker = ctx["spec"], ctx["paths"], ctx["tracker"]
    done_marker = trials_dir(paths, label) / "DONE"
    ctx["parents"][label] = tracker.parent(spec.name, label, n, seed)
    tracker.set_status(ctx["parents"][label], "RUNNING")
    if done_marker.is_file():
        print(f"[{label}] already finished; skipped", flush=True)
        tracker.set_status(ctx["parents"][label], "FINISHED")
        return True
    rt = _runtime(spec, paths, n, seed, label, ctx["cache"].root)
    if shared_missing(spec, n, seed, ctx["cache"]):
        print(f"[{label}] shared stages (source, classifier, baselines) -> {ctx['cache'].root}", flush=True)
        t0 = time.time()
        run_shared(rt, name=f"{spec.name}-{label}-shared")
        print(f"[{label}] shared stages done in {time.time() - t0:.1f} s", flush=True)
    data_cfg, cfg = spec.resolved_config(n, seed)
    exp = ctx["experiment"]
    for m in exp.baselines:
        entry = ctx["cache"].get("baseline", exp.baseline_key(m, data_cfg, cfg))
        tracker.baseline_run(ctx["parents"][label], label, entry)
    exp_name = optuna_study_name(spec, label)
    exp_path = paths.ray / exp_name
    trainable = tune.with_resources(run_trial, {"cpu": spec.resources.cpus_per_trial})
    t0 = time.time()
    if tune.Tuner.can_restore(str(exp_path)):
        print(f"[{label}] resuming Tune run {exp_path}", flush=True)
        tuner = tune.Tuner.restore(str(exp_path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, tune_config=_tune_config(spec, label, paths, rt),
                           run_config=tune.RunConfig(name=exp_name, storage_path=str(paths.ray), verbose=0,
                                                     callbacks=[StudyCallback(str(paths.root), label)]))
    print(f"[{label}] Tune run {exp_name}: {spec.budget.trials_per_n} trials", flush=True)
    with _sigint_watch() as interrupted:
        grid = tuner.fit()
    if interrupted():  # Tune stops gracefully on Ctrl-C and returns as if done: the unit is NOT finished
        return False
    trials = grid._experiment_analysis.trials
    unfinished = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
    budget = spec.budget.time_budget_s
    if unfinished and not (budget and time.time() - t0 >= budget):
        return False
    for t in trials:  # reconcile: every trial's MLflow run finalised (callbacks may have been missed)
        finalize_trial(ctx, label, t.trial_id, t.config, t.last_result,
                       "FAILED" if t.status == "ERROR" else "FINISHED")
    orphans = _mark_orphans_failed(paths, exp_name)
    if orphans:
        print(f"[{label}] {orphans} Optuna trial(s) left RUNNING by an interrupted driver marked FAIL", flush=True)
    tracker.set_status(ctx["parents"][label], "FINISHED")
    done_marker.parent.mkdir(parents=True, exist_ok=True)
    done_marker.write_text(f"{len(trials)} trials\n")
    return True


@contextmanager
def _sigint_watch() -> Iterator[Any]:
    """Yields a function telling whether SIGINT arrived during the block (``tuner.fit()``).

    On the first Ctrl-C, Tune's own handler stops the run gracefully, restores the handler it found (ours)
    and ``fit`` returns normally, with the running trials TERMINATED: without this the unit would be taken
    as finished (DONE, its Optuna trials FAILed) and resume would skip it. Ours is thus back in place
    after an interrupt, while a normal return leaves Tune's handler installed; a SIGINT Tune does not catch
    (``TUNE_DISABLE_SIGINT_HANDLER``) reaches ours: noted, then KeyboardInterrupt as usual.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    hit = []

    def handler(sig, frame):
        hit.append(sig)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    tune_catches = not int(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0"))
    state: dict[str, bool] = {}
    try:
        yield lambda: state.get("interrupted", False)
    finally:
        state["interrupted"] = bool(hit) or (tune_catches and signal.getsignal(signal.SIGINT) is handler)
        signal.signal(signal.SIGINT, previous)


class KeepInitialTrialsASHA(ASHAScheduler):
    """ASHA that never stops a spec's initial trial: those are the reference points (the library defaults) the
    study promises to report. Their results still fill the rungs that the other trials are compared against.
    (Measured: with 3 trials per n, ASHA stopped the initial trial at epoch 4 for 0.00007 of energy distance
    behind a trial that then ended at 0.0144, 5x worse.)"""

    def __init__(self, initial: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial = initial

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        from study.trial import trial_params

        decision = super().on_trial_result(tune_controller, trial, result)
        params = trial_params(trial.config)
        if decision == self.STOP and any(all(params.get(k) == v for k, v in p.items()) for p in self.initial):
            return self.CONTINUE
        return decision


def _tune_config(spec: StudySpec, label: str, paths: StudyPaths, rt: dict[str, Any]):
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from study.experiments import experiment_for

    es = spec.early_stopping
    metric0, mode0 = experiment_for(spec).asha_metric()
    if es.enabled:
        if spec.multi_objective:
            print(f"[{label}] multi-objective: ASHA stops trials on the first objective ({spec.metrics[0]})",
                  flush=True)
        if metric0 != spec.metrics[0]:
            print(f"[{label}] ASHA stops trials on the in-training proxy {metric0} ({mode0}); "
                  f"{spec.metrics[0]} is evaluated at the final epoch only", flush=True)
        from study.space import initial_trial_params

        initial = [initial_trial_params(spec.space, point) for point in spec.initial_trials or ()]
        scheduler = KeepInitialTrialsASHA(initial, time_attr="epoch", metric=metric0, mode=mode0,
                                          max_t=spec.max_epochs + 1, grace_period=es.grace_period,
                                          reduction_factor=es.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    return tune.TuneConfig(search_alg=make_search(spec, label, paths, rt), scheduler=scheduler,
                           num_samples=spec.budget.trials_per_n,
                           max_concurrent_trials=spec.resources.max_concurrent_trials,
                           time_budget_s=spec.budget.time_budget_s, trial_dirname_creator=trial_dirname,
                           trial_name_creator=trial_dirname,
                           # a new process per trial re-pays the imports (torch._dynamo via AdamW, ...):
                           # measured 8-22 s between trials without reuse, 0.1 s with, same metrics
                           reuse_actors=True)


def trial_dirname(trial) -> str:
    """Short, deterministic Tune trial directory names (the default embeds the whole config)."""
    return f"trial_{trial.trial_id}"


def _drive(paths: StudyPaths, spec: StudySpec, address: str | None, tracking_uri: str | None, resume: bool) -> int:
    import ray

    from study.experiments import experiment_for
    from study.report import write_report
    from study.tracking import Tracker

    with study_lock(paths):
        paths.make_dirs()
        state_path = paths.root / STATE_FILE
        state = json.loads(state_path.read_text()) if state_path.is_file() else {}
        state.setdefault("cache_dir", str(resolve_cache_dir(paths.cache)))
        if tracking_uri:
            state["tracking_uri"] = tracking_uri
        state.setdefault("tracking_uri", paths.mlflow_url)
        state_path.write_text(json.dumps(state, indent=1))
        tracker = Tracker(state["tracking_uri"], spec.name, paths.artifact_location)
        if resume:
            killed = tracker.close_running("KILLED")
            if killed:
                print(f"resume: {killed} MLflow run(s) left RUNNING marked KILLED", flush=True)
        ctx = {"spec": spec, "paths": paths, "tracker": tracker, "cache": StageCache(state["cache_dir"]),
               "parents": {}, "spec_text": dump_spec(spec), "experiment": experiment_for(spec)}
        _ACTIVE[str(paths.root)] = ctx
        started = _init_ray(spec, address)
        t0 = time.time()
        print(f"study {spec.name}: {paths.root} (MLflow {state['tracking_uri']})", flush=True)
        try:
            for n, seed, label in units(spec):
                if not _run_unit(ctx, n, seed, label):
                    print(f"\ninterrupted. Resume with:  {PROG} resume {paths.root}", flush=True)
                    return 130
        except KeyboardInterrupt:
            print(f"\ninterrupted. Resume with:  {PROG} resume {paths.root}", flush=True)
            return 130
        finally:
            _ACTIVE.pop(str(paths.root), None)
            if started:
                ray.shutdown()
        print(f"study {spec.name}: all units done in {time.time() - t0:.1f} s", flush=True)
        text = write_report(paths.root, tracking_uri=state["tracking_uri"])
        print(text)
        return 0


def run_study(spec: StudySpec, study_dir: str | Path, address: str | None = None,
              tracking_uri: str | None = None) -> int:
    """Create the study directory (spec.yaml) and run every unit; returns the exit code."""
    from study.experiments import experiment_for

    paths = StudyPaths(Path(study_dir).expanduser().resolve())
    if not address:
        check_resources(spec)
    experiment_for(spec)  # refuse an experiment the runner cannot run before anything is written
    write_spec(spec, paths)
    return _drive(paths, spec, address, tracking_uri, resume=False)


def resume_study(study_dir: str | Path, address: str | None = None, tracking_uri: str | None = None) -> int:
    """Continue an interrupted study: finished units are kept, unfinished Tune runs restored."""
    from study.experiments import experiment_for

    paths = open_study_dir(study_dir)
    spec = read_study_spec(paths)
    experiment_for(spec)
    return _drive(paths, spec, address, tracking_uri, resume=True)
