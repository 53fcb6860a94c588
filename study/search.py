"""How a unit's space is searched: Optuna (sampler, define-by-run, initial trials) inside Ray Tune, and ASHA.

``tune_config(spec, label, paths)`` is the Tune side of one unit: ``TaggingOptunaSearch`` over the Optuna
study ``<study>-<label>`` in ``optuna.db`` (``define_by_run`` compiles the spec's space; ``make_sampler``
the spec's sampler; the spec's initial trials queued first in a new study) and ``KeepInitialTrialsASHA`` on
the reported guidance epoch, or FIFO without early stopping.

Optuna parameter names are the dotted paths themselves (no "/", which Ray Tune would unflatten); an
``off:`` switch is the categorical ``"<path>:switch"`` in ("off", "on").
"""

from __future__ import annotations

import functools
import math
from typing import Any

from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch as _OptunaSearch

from study.method_spaces import TGDP, trains_guidance
from study.outcomes import STOP_EPOCH
from study.paths import StudyPaths, run_name
from study.relocate import StudyStorage
from study.space import SAMPLERS, SWITCH_CHOICES, Space, initial_trial_params, switch_name
from study.spec import StudySpec


# --- the space compiled for Optuna ---------------------------------------------------------------------

def _suggest(trial: Any, path: str, p: Any) -> Any:
    if p.kind == "float":
        return trial.suggest_float(path, p.low, p.high, log=p.log, step=p.step)
    if p.kind == "int":
        return trial.suggest_int(path, p.low, p.high, log=p.log, step=p.step)
    return trial.suggest_categorical(path, list(p.choices))


def define_by_run(trial: Any, space: Space) -> dict[str, Any]:
    """Optuna define-by-run function (module-level; bind with ``functools.partial`` for OptunaSearch).

    Suggests the parameters of ``space`` on ``trial`` in order, honouring conditions and off-switches.
    Returns ``{path: off value}`` for every parameter switched off; OptunaSearch merges it over the
    suggested values, so the Tune config holds the effective value of every sampled path under its path
    (what ``study.runtime.resolve`` reads), next to the switches.
    """
    out: dict[str, Any] = {}
    state: dict[str, tuple[Any, bool]] = {}  # path -> (effective value, switched off), sampled only
    for path, p in space.items():
        if p.when is not None:
            if p.when.param not in state or not p.when.holds(*state[p.when.param]):
                continue
        if p.off is not None and trial.suggest_categorical(switch_name(path), list(SWITCH_CHOICES)) == "off":
            state[path] = (p.off, True)
            out[path] = p.off
            continue
        state[path] = (_suggest(trial, path, p), False)
    return out


def grid_values(p: Any) -> list[Any]:
    """The finite set of values of a categorical/int/stepped-float parameter (for the grid sampler)."""
    if p.kind == "categorical":
        return list(p.choices)
    if p.kind == "float" and p.step is None:
        raise ValueError("a float parameter without step has no grid")
    k = int(math.floor((p.high - p.low) / p.step + 1e-9))
    vals = [p.low + i * p.step for i in range(k + 1)]
    return [int(v) for v in vals] if p.kind == "int" else [round(v, 12) for v in vals]


def grid_search_space(space: Space) -> dict[str, list[Any]]:
    """``GridSampler`` search space: every (switch and) parameter with its values."""
    grid: dict[str, list[Any]] = {}
    for path, p in space.items():
        if p.off is not None:
            grid[switch_name(path)] = list(SWITCH_CHOICES)
        grid[path] = grid_values(p)
    return grid


def make_sampler(sampler: str, space: Space, *, seed: int | None) -> Any:
    """The Optuna sampler named in the spec (``optuna`` is imported here, not at module import)."""
    import warnings

    import optuna

    s = optuna.samplers
    if sampler == "tpe":
        # multivariate + group: TPE models the joint, conditional space (experimental, hence quiet)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return s.TPESampler(seed=seed, multivariate=True, group=True)
    if sampler == "cmaes":
        return s.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if sampler == "gp":
        return s.GPSampler(seed=seed, warn_independent_sampling=False)
    if sampler == "random":
        return s.RandomSampler(seed=seed)
    if sampler == "grid":
        return s.GridSampler(grid_search_space(space), seed=seed)
    if sampler == "nsga2":
        return s.NSGAIISampler(seed=seed)
    raise ValueError(f"unknown sampler {sampler!r}; allowed: {list(SAMPLERS)}")


# --- the Tune run of a unit ------------------------------------------------------------------------------

def make_search(spec: StudySpec, label: str, paths: StudyPaths, method: str = TGDP) -> TaggingOptunaSearch:
    """Optuna over ``method``'s space (``StudySpec.space_of``), study ``<study>-<label>`` (``label``: the
    method's run label, ``study.paths.method_label``)."""
    import optuna

    modes = ["min" if d == "minimize" else "max" for d in spec.directions]
    multi = spec.multi_objective
    storage = StudyStorage(paths.optuna_url)  # pickled into tuner.pkl by role: a copied study reopens its own
    space = spec.space_of(method)
    if spec.initial_trials_of(method):
        enqueue_initial_trials(spec, storage, run_name(spec, label), method)
    return TaggingOptunaSearch(
        space=functools.partial(define_by_run, space=space),
        metric=spec.metrics if multi else spec.metrics[0], mode=modes if multi else modes[0],
        sampler=make_sampler(spec.sampler, space, seed=spec.sampler_seed),
        study_name=run_name(spec, label),
        storage=storage)


def enqueue_initial_trials(spec: StudySpec, storage: Any, study_name: str, method: str = TGDP) -> None:
    """Queue ``method``'s initial trials in a *new* Optuna study: a resumed one already holds them (run, running
    or still waiting), and queueing again would run them twice."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True,
                                directions=list(spec.directions))
    if study.trials:
        return
    for point in spec.initial_trials_of(method):
        study.enqueue_trial(initial_trial_params(spec.space_of(method), point), user_attrs={"initial_trial": True})


class TaggingOptunaSearch(_OptunaSearch):
    """OptunaSearch that records ``tune_trial_id`` on each Optuna trial (reports join on it) and tells a trial
    stopped early PRUNED."""

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
        """A trial that ended before its final evaluation (no ``"final"`` in its last report: ASHA or the time
        budget stopped it) is told PRUNED, not COMPLETE: its in-training value (epoch e, fewer samples) stays
        an intermediate value (Optuna gives a PRUNED trial its last one as value) and TPE does not take it for
        a final result; ``stop_epoch`` records the epoch it reached (``study.outcomes``). A trial stopped on a
        proxy report (ECG) has no intermediate value and so no value."""
        if not error and result is not None and not result.get("final"):
            ot = self._ot_trials.get(trial_id)
            if ot is not None and "epoch" in result:
                ot.set_user_attr(STOP_EPOCH, int(result["epoch"]))
            result = None  # OptunaSearch tells a trial without a result PRUNED
        super().on_trial_complete(trial_id, result, error)


class KeepInitialTrialsASHA(ASHAScheduler):
    """ASHA that never stops a spec's initial trial: those are the reference points (the library defaults) the
    study promises to report. Their results still fill the rungs that the other trials are compared against.
    (Measured: with 3 trials per n, ASHA stopped the initial trial at epoch 4 for 0.00007 of energy distance
    behind a trial that then ended at 0.0144, 5x worse.)"""

    def __init__(self, initial: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial = initial

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        params = trial.config
        if decision == self.STOP and any(all(params.get(k) == v for k, v in p.items()) for p in self.initial):
            return self.CONTINUE
        return decision


def tune_config(spec: StudySpec, label: str, paths: StudyPaths, method: str = TGDP):
    """Search algorithm (Optuna), scheduler (ASHA or FIFO) and budget of the Tune run of ``method`` in one unit
    (``label``: its run label). Methods without guidance epochs report once, at the end: FIFO (ASHA could not
    stop them anyway), with the same ``trials_per_n``."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from study.experiments import experiment_for

    es = spec.early_stopping
    metric0, mode0 = experiment_for(spec).asha_metric()
    if es.enabled and not trains_guidance(method):
        print(f"[{label}] {method} reports once per trial (no epochs): no early stopping (FIFO)", flush=True)
    if es.enabled and trains_guidance(method):
        if spec.multi_objective:
            print(f"[{label}] multi-objective: ASHA stops trials on the first objective ({spec.metrics[0]})",
                  flush=True)
        if metric0 != spec.metrics[0]:
            print(f"[{label}] ASHA stops trials on the in-training proxy {metric0} ({mode0}); "
                  f"{spec.metrics[0]} is evaluated at the final epoch only", flush=True)
        initial = [initial_trial_params(spec.space_of(method), point) for point in spec.initial_trials_of(method)]
        scheduler = KeepInitialTrialsASHA(initial, time_attr="epoch", metric=metric0, mode=mode0,
                                          max_t=spec.max_epochs + 1, grace_period=es.grace_period,
                                          reduction_factor=es.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    return tune.TuneConfig(search_alg=make_search(spec, label, paths, method), scheduler=scheduler,
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


__all__ = ["KeepInitialTrialsASHA", "TaggingOptunaSearch", "define_by_run", "grid_search_space", "make_sampler",
           "tune_config"]
