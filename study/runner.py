"""Drive a study: per unit (n, seed) one Optuna study searched by one Ray Tune run of Train-run trials.

Flow of ``run_study`` / ``resume_study`` (the driver holds ``<study>/lock`` throughout):

1. ``ray.init`` (local, ``resources.num_cpus``) or join ``--address``; check the trials fit.
2. For each unit (n, seed), labelled ``n<n>`` (``n<n>-s<seed>`` with several seeds; ``study.paths.units``):
   a. the unit's ``TrialRuntime`` (``study.runtime``): its resolved configs, paths and resources;
   b. the shared stages (source model, the experiment's shared methods, the unsearched classifier) as one
      Ray Train run filling the stage cache (skipped when every entry is cached); their MLflow runs;
   c. per tuned method (tgdp, then the spec's ``methods:``) a Tune run ``<study>-<run>`` of
      ``study.trial.run_trial``, ``<run>`` = ``<label>`` for tgdp, ``<label>-<method>`` otherwise
      (``study.search``: Optuna on ``optuna.db``, study ``<study>-<run>``; ASHA on the reported guidance
      epoch for tgdp / tgdp_reg, FIFO for methods that report once); on resume
      ``Tuner.restore(resume_unfinished=True, resume_errored=True)``; (unit, method) runs that finished
      (``trials/<run>/DONE`` at the spec's budget; ``study.extend``) are skipped; MLflow runs from
      ``study.callback``, which also feeds the live progress (``study.progress``: unit k/N, trial k/N, heartbeat;
      ``study.console`` keeps the rest quiet);
   d. reconciliation: every trial with a ``result.pt`` has a finalised MLflow run; Optuna trials left
      RUNNING by a killed driver (never handed to Tune) are marked FAIL.
3. The report (``study.report.write_report``): test-draw table, figures, MLflow summary run.

Ctrl-C: Tune stops gracefully; the driver prints how to resume and exits 130.
"""

from __future__ import annotations

import fcntl
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from study import UserError
from study.cache import StageCache, classifier_key, classifier_searched, resolve_cache_dir, source_key
from study.extend import done_trials, mark_done, run_finished, tune_run
from study.integrity import open_study
from study.method_spaces import TGDP
from study.paths import StudyPaths, method_label, method_runs, run_name, unit_label, units
from study.preflight import check_ray_address, check_tracking_uri, new_study_dir, remove_if_unused
from study.progress import LIVE as PROGRESS, Progress
from study.ray_auth import LOOPBACK, private_token
from study.runtime import TrialRuntime, trial_runtime
from study.safe_io import no_symlink_below, open_nofollow
from study.signing import sign, verify
from study.spec import StudySpec, check_resources, read_study_spec, resource_issues, write_spec
from study.trial_records import TrialRecords

PROG = "tgdp-study"


# --- lock ----------------------------------------------------------------------------------------------

@contextmanager
def study_lock(paths: StudyPaths) -> Iterator[None]:
    """Exclusive ``fcntl.flock`` on ``<study>/lock`` holding our pid; a second driver gets a UserError."""
    paths.root.mkdir(parents=True, exist_ok=True)
    no_symlink_below(paths.root, paths.lock)
    fd = open_nofollow(paths.lock, os.O_RDWR | os.O_CREAT)  # a planted symlink would be truncated through
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


def _init_ray(spec: StudySpec, address: str | None, verbose: bool = False) -> tuple[bool, str | None]:
    """Start or join Ray; returns (True when we started it, and so shut it down; the dashboard's address)."""
    import ray

    from study.console import ray_logging_level

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    from study.trial import quiet_ray_logs

    quiet_ray_logs()
    started, context = False, None
    quiet = {"log_to_driver": True, "logging_level": ray_logging_level(verbose)}
    if not ray.is_initialized():
        if address:
            context = ray.init(address=address, **quiet)
        else:
            r = spec.resources
            private_token()  # token authentication with a fresh token of this driver's (study.ray_auth)
            # address="local": always a new Ray of our own; plain ray.init() would join any Ray already running on
            # this machine (RAY_ADDRESS or /tmp/ray) and then refuse num_cpus with a traceback
            context = ray.init(address="local", num_cpus=int(r.num_cpus) if r.num_cpus else os.cpu_count(),
                               num_gpus=int(r.num_gpus) if r.num_gpus is not None else None,
                               include_dashboard=_dashboard(r), **LOOPBACK, **quiet)
        started = True
    total = ray.cluster_resources()
    issues = resource_issues(spec.resources, float(total.get("CPU", 0)), float(total.get("GPU", 0)),
                             what="the Ray cluster")
    if issues:
        if started:
            ray.shutdown()
        from study import SpecError
        raise SpecError(spec.source, issues)
    url = getattr(context, "dashboard_url", None)
    if url is None:  # joined, or already initialised by the caller (tests)
        try:
            url = ray._private.worker.get_dashboard_url()
        except Exception:  # noqa: BLE001 - private API; the start-up line then says "not running"
            url = None
    return started, url


def _dashboard(r: Any) -> bool | None:
    """``include_dashboard`` of a local ray.init: the spec's choice, else off for in-process trials (its start-up
    costs seconds) and Ray's default with Train workers, whose ASHA-stopped trials need the dashboard's state
    API to release their placement groups (DESIGN §4)."""
    if r.dashboard is not None:
        return r.dashboard
    return None if r.workers_per_trial else False


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


# --- driving -------------------------------------------------------------------------------------------

def shared_missing(exp: Any, rt: TrialRuntime, cache: StageCache) -> bool:
    """True when a stage-cache entry the unit's trials need (source, classifier, shared methods) is missing."""
    need = [("source", source_key(rt.data, rt.base))] + [("baseline", exp.baseline_key(m, rt.data, rt.base))
                                                         for m in exp.baselines]
    if not rt.classifier_searched:
        need.append(("classifier", classifier_key(rt.data, rt.base)))
    return any(not cache.has(kind, key) for kind, key in need)


def _run_unit(records: TrialRecords, cache: StageCache, n: int, seed: int, label: str) -> bool:
    """Shared stages, then one Tune run per tuned method of the unit; True when the unit finished (not
    interrupted). Each (unit, method) has its own DONE marker: a resume skips the finished ones."""
    from study.experiments import experiment_for
    from study.trial import run_shared

    spec, paths, tracker = records.spec, records.paths, records.tracker
    progress = PROGRESS[str(paths.root)]
    parent = records.parent(label)
    tracker.set_status(parent, "RUNNING")
    methods = [(m, method_label(label, m)) for m in spec.tuned_methods]
    if all(run_finished(paths, run, spec) for _, run in methods):
        progress.skipped("unit", spec.budget.trials_per_n * len(methods))
        tracker.set_status(parent, "FINISHED")
        return True
    rt = _runtime(spec, paths, cache, n, seed, TGDP)
    exp = experiment_for(spec)
    if shared_missing(exp, rt, cache):
        with progress.shared(f"source model, classifier, baselines -> {cache.root}"):
            run_shared(rt, name=f"{run_name(spec, label)}-shared")
    for m in exp.baselines:
        tracker.baseline_run(parent, label, cache.get("baseline", exp.baseline_key(m, rt.data, rt.base)))
    for method, run in methods:
        if run_finished(paths, run, spec):
            progress.skipped(method, spec.budget.trials_per_n)
        elif not _run_tune(records, _runtime(spec, paths, cache, n, seed, method), run):
            return False
    tracker.set_status(parent, "FINISHED")
    return True


def _runtime(spec: StudySpec, paths: StudyPaths, cache: StageCache, n: int, seed: int, method: str) -> TrialRuntime:
    """The trial runtime of ``method``'s Tune run in unit (n, seed)."""
    run = method_label(unit_label(spec, n, seed), method)
    return trial_runtime(spec, n, seed, cache_dir=str(cache.root), trials_dir=str(paths.trials_dir(run)),
                         train_storage=str(paths.ray / "_train_runs"), method=method,
                         classifier_searched=classifier_searched(spec.space_of(method)))


def _run_tune(records: TrialRecords, rt: TrialRuntime, run: str) -> bool:
    """The Tune run ``<study>-<run>`` of one tuned method (``rt.method``) in one unit; True when it finished."""
    from ray import tune

    from study.callback import StudyCallback
    from study.search import tune_config
    from study.trial import run_trial

    paths, tracker = records.paths, records.tracker
    exp_name, spec = tune_run(records.spec, paths, run)  # the whole budget, or the trials --add-trials added
    exp_path = paths.ray / exp_name
    # the runtime travels by tune.with_parameters (object store), never in the Tune config: re-bound on restore
    trainable = tune.with_resources(tune.with_parameters(run_trial, runtime=rt), {"cpu": spec.resources.cpus_per_trial})
    t0 = time.time()
    progress = PROGRESS[str(paths.root)]
    resumed = tune.Tuner.can_restore(str(exp_path))
    if resumed:
        verify(paths, exp_path)  # Tune unpickles what it restores: only files this study's driver signed
        tuner = tune.Tuner.restore(str(exp_path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, tune_config=tune_config(spec, run, paths, rt.method),
                           run_config=tune.RunConfig(name=exp_name, storage_path=str(paths.ray), verbose=0,
                                                     callbacks=[StudyCallback(str(paths.root), run)],
                                                     # a trial whose node died restarts from its last checkpoint
                                                     failure_config=tune.FailureConfig(max_failures=rt.max_failures)))
        sign(paths, exp_path, only=("tuner.pkl",))  # just written by Tuner(); the rest at Tune's checkpoints
    progress.run_start(run, rt.method, resumed)
    try:
        with _sigint_watch() as interrupted:
            grid = tuner.fit()
    finally:
        progress.run_end()
    if interrupted():  # Tune stops gracefully on Ctrl-C and returns as if done: the unit is NOT finished
        return False
    trials = grid._experiment_analysis.trials
    unfinished = [t for t in trials if t.status not in ("TERMINATED", "ERROR")]
    budget = spec.budget.time_budget_s
    if unfinished and not (budget and time.time() - t0 >= budget):
        return False
    for t in trials:  # reconcile: every trial's MLflow run finalised (callbacks may have been missed)
        records.finalize(run, t.trial_id, t.config, t.last_result, "FAILED" if t.status == "ERROR" else "FINISHED")
    orphans = _mark_orphans_failed(paths, run_name(spec, run))
    if orphans:
        print(f"[{run}] {orphans} Optuna trial(s) left RUNNING by an interrupted driver marked FAIL", flush=True)
    mark_done(paths, run, records.spec, done_trials(paths, run) + len(trials))
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


def _drive(paths: StudyPaths, spec: StudySpec, address: str | None, tracking_uri: str | None, resume: bool,
           verbose: bool = False) -> int:
    from study import console

    console.configure(verbose)  # before MLflow, Optuna and Ray print anything
    import ray

    from study.callback import LIVE
    from study.mlflow_store import ensure_sqlite_store
    from study.relocate import drive, relocate_mlflow
    from study.report import write_report
    from study.tracking import Tracker

    with study_lock(paths):
        paths.make_dirs()
        state = paths.read_state()
        state.setdefault("cache_dir", str(resolve_cache_dir(paths.cache)))
        if tracking_uri:
            state["tracking_uri"] = StudyPaths.absolute_uri(tracking_uri)
        state.setdefault("tracking_uri", paths.mlflow_url)
        paths.write_state(state)
        ensure_sqlite_store(state["tracking_uri"])  # copied from a template: the migrations ran once
        relocate_mlflow(paths, state["tracking_uri"], spec.name)  # a moved or copied study logs into itself
        drive(paths)  # and Tune's restored Optuna storage opens its own optuna.db
        tracker = Tracker(state["tracking_uri"], spec.name, paths.artifact_location)
        if resume:
            killed = tracker.close_running("KILLED")
            if killed:
                print(f"resume: {killed} MLflow run(s) left RUNNING marked KILLED", flush=True)
        records = TrialRecords(tracker, paths, spec)
        cache = StageCache(state["cache_dir"])
        LIVE[str(paths.root)] = records
        started, dashboard = _init_ray(spec, address, verbose)
        t0 = time.time()
        print("\n".join(console.startup_lines(spec.name, str(paths.root), state["tracking_uri"], dashboard, PROG)),
              flush=True)
        progress = PROGRESS[str(paths.root)] = _progress(spec)
        finished = False
        try:
            for k, (n, seed, label) in enumerate(units(spec), 1):
                progress.unit(k, label, n, seed)
                if not _run_unit(records, cache, n, seed, label):
                    print(f"\ninterrupted. Resume with:  {PROG} resume {paths.root}", flush=True)
                    return 130
            finished = True
        except KeyboardInterrupt:
            print(f"\ninterrupted. Resume with:  {PROG} resume {paths.root}", flush=True)
            return 130
        finally:
            LIVE.pop(str(paths.root), None)
            PROGRESS.pop(str(paths.root)).close()
            if started and not finished:
                ray.shutdown()
        print(f"study {spec.name}: all units done in {time.time() - t0:.1f} s", flush=True)
        # Ray stops (mostly waiting for its processes to exit) while the report is drawn, which does not use Ray
        with ThreadPoolExecutor(1, thread_name_prefix="ray-shutdown") as pool:
            stopping = pool.submit(ray.shutdown) if started else None
            text = write_report(paths.root, tracking_uri=state["tracking_uri"], resync=False)
            if stopping is not None:
                stopping.result()
        print(text)
        return 0


def _progress(spec: StudySpec) -> Progress:
    return Progress(units=len(units(spec)), trials_per_run=spec.budget.trials_per_n,
                    runs_per_unit=len(spec.tuned_methods), metric=spec.metrics[0],
                    minimize=spec.directions[0] == "minimize", max_epochs=spec.max_epochs)


def run_study(spec: StudySpec, study_dir: str | Path, address: str | None = None,
              tracking_uri: str | None = None, verbose: bool = False) -> int:
    """Create the study directory (spec.yaml) and run every unit; returns the exit code."""
    from study.experiments import experiment_for

    paths = StudyPaths(Path(study_dir).expanduser().resolve())
    if not address:
        check_resources(spec)
    experiment_for(spec)  # refuse an experiment the runner cannot run before anything is written
    check_tracking_uri(tracking_uri)
    check_ray_address(address)
    with new_study_dir(paths) as staging:  # renamed into place complete, or removed
        write_spec(spec, staging)
    try:
        return _drive(paths, spec, address, tracking_uri, resume=False, verbose=verbose)
    except BaseException:
        if remove_if_unused(paths):  # failed before any work (Ray or MLflow would not start): run again
            print(f"{paths.root}: removed (nothing was computed yet)", flush=True)
        raise


def resume_study(study_dir: str | Path, address: str | None = None, tracking_uri: str | None = None,
                 verbose: bool = False) -> int:
    """Continue an interrupted study: finished units are kept, unfinished Tune runs restored."""
    from study.experiments import experiment_for

    paths = open_study(study_dir)
    spec = read_study_spec(paths)
    experiment_for(spec)
    check_tracking_uri(tracking_uri)
    check_ray_address(address)
    for _, _, _, _, run in method_runs(spec):  # before Ray starts (_run_tune checks again): what resume restores
        if not run_finished(paths, run, spec):
            verify(paths, paths.ray / tune_run(spec, paths, run)[0])
    return _drive(paths, spec, address, tracking_uri, resume=True, verbose=verbose)


__all__ = ["PROG", "resume_study", "run_study", "study_lock", "units"]
