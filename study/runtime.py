"""The trial contract: what the driver hands a trial across Ray, resolved before it leaves the driver.

``TrialRuntime`` is built once per unit (n, seed) in the driver (``trial_runtime``) from the validated spec.
The Tune trainable ``study.trial.run_trial`` receives it through ``tune.with_parameters``; its Tune config
holds only the searched values. ``run_trial`` resolves the trial's config (``resolve``: the base config plus
the searched values, nothing parsed) and hands its Train workers a ``ResolvedTrial``. No process behind Ray
reads, parses or holds the spec; the experiment object is built from the runtime (``experiment``,
``evaluation``, ``metrics``, ``directions`` are the attributes ``study.experiments`` reads from a spec).

The path of a searched value, ``guidance.eta_consistency`` for example, under that one name:

1. ``study.search.define_by_run`` suggests ``guidance.eta_consistency`` on the Optuna trial and leaves its
   effective value under that name in the Tune config (with an ``off:`` switch, the switch is Optuna's own
   categorical ``guidance.eta_consistency:switch``; switched off, the path holds the off value);
2. ``study.trial.run_trial(config, runtime)`` gets ``config["guidance.eta_consistency"]``;
3. ``resolve(runtime, config)`` sets ``TGDPConfig.guidance.eta_consistency`` on ``runtime.base``;
4. the Train workers run ``pipeline.fit_tgdp(cfg)``, which trains stage C on ``cfg.guidance``;
5. ``stages.train_guidance`` adds ``cfg.eta_consistency * losses.consistency(...)`` to the loss.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tgdp.config import TGDPConfig, from_dict

EVAL_SAMPLES = 2000  # samples of the in-training evaluation (the final one uses sample.num_samples)


@dataclass(frozen=True)
class TrialRuntime:
    """Everything a trial of one unit needs, resolved in the driver (picklable, frozen)."""

    # the unit and its experiment
    experiment: str  # the spec's experiment name (``study.experiments.experiment_for(runtime)``)
    n: int  # target sample size of the unit
    seed: int  # the unit's seed: data draw and every stage seed unless ``fixed`` sets one
    data: Any  # the experiment's data config of the unit (GMMConfig, ECGDataConfig: frozen dataclasses)
    base: TGDPConfig  # defaults <- spec.fixed <- seed: every trial's config before its searched values
    searched: tuple[str, ...]  # dotted TGDPConfig paths of the spec's space, in order
    evaluation: Mapping[str, Any] | None  # the spec's evaluation overrides of the experiment (None: defaults)
    metrics: tuple[str, ...]  # objective metrics, in order (the first is ASHA's unless the experiment says)
    directions: tuple[str, ...]  # "minimize" / "maximize", one per metric
    # where (absolute paths: Ray workers run in other working directories)
    cache_dir: str  # stage cache (source model, classifier, baselines)
    trials_dir: str  # <study>/trials/<label>: one directory per trial with its result.pt
    train_storage: str  # Ray Train storage_path of the trials' and shared stages' Train runs
    # resources of each trial
    workers: int  # Ray Train workers (0 = in-process TorchTrainer)
    cpus_per_worker: float  # CPUs per Train worker
    gpus_per_worker: float  # GPUs per Train worker (NCCL when > 0)
    cpus_per_trial: float  # CPUs of the Tune trial driver (its torch threads with 0 workers)
    max_failures: int = 2  # retries of the trial's Train run (and of the Tune trial) after a worker or node died
    # trial behaviour
    eval_samples: int = EVAL_SAMPLES  # samples of the in-training evaluation
    classifier_searched: bool = False  # stage B is trained per trial (else the cached one is used)
    method: str = "tgdp"  # the tuned method of this Tune run (tgdp.methods; study.method_spaces)
    tuned_methods: tuple[str, ...] = ("tgdp",)  # every tuned method of the study (the others are shared stages)

    @property
    def use_gpu(self) -> bool:
        return self.workers > 0 and self.gpus_per_worker > 0

    @property
    def threads(self) -> int:
        """torch threads of one Train worker (or of the in-process trial)."""
        return max(1, int(self.cpus_per_worker if self.workers > 0 else self.cpus_per_trial))

    def trial_dir(self, trial_id: str) -> str:
        return os.path.join(self.trials_dir, trial_id)


@dataclass(frozen=True)
class ResolvedTrial:
    """One trial as its Train workers receive it: the unit's runtime and the trial's resolved config."""

    runtime: TrialRuntime
    trial_id: str  # the Tune trial id (names the trial directory and the Train run)
    params: Mapping[str, Any]  # the Tune config: the searched values (saved with the result)
    cfg: TGDPConfig  # resolve(runtime, params)

    @property
    def trial_dir(self) -> str:
        return self.runtime.trial_dir(self.trial_id)


def trial_runtime(spec: Any, n: int, seed: int, *, cache_dir: str, trials_dir: str, train_storage: str,
                  classifier_searched: bool, method: str = "tgdp") -> TrialRuntime:
    """The runtime of the Tune run of ``method`` in unit (n, seed) of the validated ``spec`` (a
    ``study.spec.StudySpec``); ``base`` is the method's config before its searched values; driver only."""
    data, base = spec.resolved_config(n, seed, method=method)
    r = spec.resources
    return TrialRuntime(
        experiment=spec.experiment, n=n, seed=seed, data=data, base=base, searched=tuple(spec.space_of(method)),
        method=method, tuned_methods=tuple(spec.tuned_methods),
        evaluation=dict(spec.evaluation) if spec.evaluation is not None else None,
        metrics=tuple(spec.metrics), directions=tuple(spec.directions),
        cache_dir=str(cache_dir), trials_dir=str(trials_dir), train_storage=str(train_storage),
        workers=r.workers_per_trial, cpus_per_worker=r.cpus_per_worker, gpus_per_worker=r.gpus_per_worker,
        cpus_per_trial=r.cpus_per_trial, max_failures=r.max_failures, classifier_searched=classifier_searched)


def resolve(runtime: TrialRuntime, params: Mapping[str, Any]) -> tuple[Any, TGDPConfig]:
    """(data config, TGDPConfig) of a trial: ``runtime.base`` with the searched values of ``params``.

    ``params`` is a Tune config: every sampled path holds its effective value (an off value included);
    a path it lacks was not sampled (its ``when`` did not hold) and keeps the base value. Other keys (the
    off-switches) are ignored. Equal to ``spec.resolved_config(n, seed, params)`` (tests/study/test_runtime.py).
    """
    return runtime.data, with_values(runtime.base, {p: params[p] for p in runtime.searched if p in params})


def with_values(cfg: TGDPConfig, values: Mapping[str, Any]) -> TGDPConfig:
    """``cfg`` with each dotted path (``section.field``) set, coerced and range-checked by ``from_dict``
    as the spec's ``fixed`` values are (an int for a float field becomes a float)."""
    sections: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        section, _, name = path.partition(".")
        sections.setdefault(section, {})[name] = value
    new = {}
    for section, changes in sections.items():
        old = getattr(cfg, section)
        fields = {f.name: getattr(old, f.name) for f in dataclasses.fields(old)}
        new[section] = from_dict(type(old), {**fields, **changes}, where=section)
    return dataclasses.replace(cfg, **new)


__all__ = ["EVAL_SAMPLES", "ResolvedTrial", "TrialRuntime", "resolve", "trial_runtime", "with_values"]
