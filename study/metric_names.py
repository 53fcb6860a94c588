"""The MLflow metric names of a study: one scheme for trials, baselines, parent runs and the summary run.

    val_<metric>                 a validation-draw metric. Trials: one point per guidance epoch (step = epoch,
                                 the in-training evaluation) and the final evaluation at step epochs + 1;
                                 baselines and tuned-baseline trials: their one evaluation.
    test_<metric>                a test-draw metric (finished trials and baselines; never used for ranking)
    <stage>_<value>              a training value of a stage by epoch (classifier_loss, guidance_loss_cycle, ...)
    best_<method>_val_<metric>   on a unit's parent run: the best finished trial of tuned <method>
    best_<method>_test_<metric>  (selected on validation); on the summary run the same, with step = n
    <baseline>_test_<metric>     on the summary run only: each baseline's test value, step = n

So the trials' and the baselines' values share one column per metric, and the summary run charts the best value
per n. Ray's bookkeeping (pid, timestamp, time_this_iter_s, ...) is never a metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Keys Ray Tune adds to every result (ray.tune.result.AUTO_RESULT_KEYS and the done/checkpoint flags), and the
# markers of our own reports: "epoch" is the step, "final" marks the final evaluation, "proxy" an ECG proxy report.
RAY_KEYS = frozenset({
    "training_iteration", "time_total_s", "episodes_total", "timesteps_total", "node_ip", "hostname", "pid",
    "time_this_iter_s", "timestamp", "date", "time_since_restore", "timesteps_since_restore",
    "iterations_since_restore", "config", "checkpoint_dir_name", "done", "should_checkpoint", "trial_id",
    "experiment_tag", "episodes_this_iter", "timesteps_this_iter"})
REPORT_MARKERS = frozenset({"epoch", "final", "proxy"})
TRAINING_PREFIX = "loss_"  # the guidance stage's training losses in its Tune reports (tgdp.stages.guidance)


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``values``: a failed evaluation is NaN, and a NaN point breaks MLflow's charts."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def split(prefix: str, values: Mapping[str, Any]) -> dict[str, float]:
    """``{"energy_distance": .1}`` -> ``{"val_energy_distance": .1}`` for prefix "val" (or "test")."""
    return {f"{prefix}_{k}": v for k, v in _numbers(values).items()}


def epoch_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The MLflow metrics of one Tune-bound report of a trial (a guidance epoch, or the final evaluation):
    evaluation metrics as ``val_<metric>``, training losses as ``guidance_loss_<x>``; Ray's keys dropped."""
    own = {k: v for k, v in result.items() if k not in RAY_KEYS and k not in REPORT_MARKERS}
    return {(f"guidance_{k}" if k.startswith(TRAINING_PREFIX) else f"val_{k}"): v for k, v in _numbers(own).items()}


def stage_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """A stage's report row (``{"stage": "classifier", "epoch": 20, "loss": .6}``) as ``classifier_loss``."""
    return {f"{row['stage']}_{k}": v for k, v in _numbers(row).items() if k not in ("stage", "epoch")}


def best(method: str, split_name: str, values: Mapping[str, Any]) -> dict[str, float]:
    """The best trial's values of tuned ``method``: ``best_<method>_<split>_<metric>``."""
    return {f"best_{method}_{k}": v for k, v in split(split_name, values).items()}


__all__ = ["RAY_KEYS", "best", "epoch_metrics", "split", "stage_metrics"]
