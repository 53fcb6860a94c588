"""The experiment registry: one ``Experiment`` subclass per testbed (``study.experiments.base``).

    EXPERIMENTS            name -> Experiment subclass (the spec's ``experiment:`` values)
    experiment_for(spec)   the experiment object a study runs (UserError for an unknown name)
    get_experiment(name)   an experiment object without a spec (the spec layer's validation)
    metric_names(name)     the metrics a spec may use as objectives

To add an experiment: write ``study/experiments/<name>.py`` with a subclass of ``Experiment`` and add
one line to ``EXPERIMENTS``; the spec validation, the spec reference (``study.docgen``), the runner,
the cache and the report read everything else from the object.
"""

from __future__ import annotations

from typing import Any

from study import UserError
from study.experiments.arrays import ArraysExperiment
from study.experiments.base import DIRECTIONS, Experiment, task_schedule
from study.experiments.ecg import ECGExperiment
from study.experiments.gmm import GMMExperiment

EXPERIMENTS: dict[str, type[Experiment]] = {
    "gmm": GMMExperiment,
    "ecg": ECGExperiment,
    "arrays": ArraysExperiment,
}


def get_experiment(name: str, spec: Any = None, cache_dir: str | None = None) -> Experiment:
    """The experiment ``name`` (with ``spec`` and the stage ``cache_dir`` when given); UserError naming the known
    ones otherwise."""
    cls = EXPERIMENTS.get(name)
    if cls is None:
        raise UserError(f"experiment {name!r}: unknown; allowed: {', '.join(EXPERIMENTS)}")
    return cls(spec, cache_dir)


def experiment_for(spec: Any, cache_dir: str | None = None) -> Experiment:
    """The experiment of a validated spec (``spec.experiment``); UserError before anything is written
    when there is none. ``cache_dir``: the stage cache (default: a trial runtime's own ``cache_dir``)."""
    return get_experiment(spec.experiment, spec, cache_dir)


def metric_names(name: str) -> tuple[str, ...]:
    """The metrics experiment ``name`` reports and a spec may optimise, in the experiment's order."""
    return tuple(get_experiment(name).metrics)


__all__ = ["DIRECTIONS", "EXPERIMENTS", "ECGExperiment", "Experiment", "GMMExperiment", "experiment_for",
           "get_experiment", "metric_names", "task_schedule"]
